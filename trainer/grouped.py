"""The ``grouped`` engine: all cells' convolutions of one layer in one grouped convolution.

Horizontal fusion as in HFTA (Wang et al., MLSys 2021): ``P`` networks of the same DCGAN
architecture become one wide network. A conv layer's input is the members' inputs stacked
along channels, ``[B, P·Cin, H, W]``, and one ``F.conv2d`` / ``F.conv_transpose2d`` with
``groups=P`` applies each member's weights (concatenated along the leading dim, which for the
stacked ``[P, Cout, Cin, k, k]`` parameters is a free view) to its own channel block.
BatchNorm over ``P·C`` features is per member by construction: its running stats are views of
the stacked ``[P, C]`` buffers and are updated in place, as the per-cell modules would update
them (``num_batches_tracked`` too). Linear layers are one batched GEMM over the members.

The parameter layout is :class:`trainer.batched.NetState`'s, unchanged, so checkpoints, pools
and the coevolution code do not know which engine ran. Autograd does the backward; weight
gradients come back shaped (and laid out) like the stacked parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

CHANNELS_LAST = False   # grouped activations and weights in channels-last memory (see _to_grouped)

_ACTS = {nn.LeakyReLU: "leaky", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.ReLU: "relu", nn.Identity: None}


@dataclass(frozen=True)
class _Op:
    """One step of a plan: ``kind`` is linear | conv | convT | bn | act | view | flatten."""

    kind: str
    key: str = ""                       # parameter / buffer prefix ("fc.0", "conv.1", …)
    stride: int = 1
    padding: int = 0
    act: str | None = None
    slope: float = 0.0
    shape: tuple[int, ...] = ()         # view: per-member [C, H, W]
    eps: float = 1e-5
    momentum: float = 0.1


@dataclass(frozen=True)
class ConvPlan:
    """A DCGAN generator/discriminator as a list of :class:`_Op`, plus how it shapes its ends:
    ``in_view`` reshapes each input row (DCGAN64's ``z → [L, 1, 1]``), ``discriminator``
    drops the output's unit dim (``[P, B]``)."""

    ops: tuple[_Op, ...]
    in_view: tuple[int, ...] | None
    discriminator: bool

    def apply(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor,
              train: bool) -> torch.Tensor:
        P, B = x.shape[0], x.shape[1]
        h = x if self.in_view is None else x.reshape(P, B, *self.in_view)
        stacked = True   # [P, B, ...] (per member) vs grouped [B, P·C, ...] (members along channels)
        for op in self.ops:
            if op.kind == "linear":
                if not stacked:
                    h, stacked = h.reshape(B, P, -1).transpose(0, 1), True
                h = torch.baddbmm(params[op.key + ".bias"].unsqueeze(1), h.reshape(P, B, -1),
                                  params[op.key + ".weight"].mT)
                continue
            if op.kind == "flatten":
                continue   # grouped [B, P·C, H, W] is already per member contiguous; the next linear reshapes
            if stacked and op.kind != "act":
                h, stacked = _to_grouped(h), False
            if op.kind == "conv":
                w = params[op.key + ".weight"]
                h = F.conv2d(h, _weight(w), params[op.key + ".bias"].reshape(-1),
                             op.stride, op.padding, 1, P)
            elif op.kind == "convT":
                w = params[op.key + ".weight"]
                h = F.conv_transpose2d(h, _weight(w), params[op.key + ".bias"].reshape(-1),
                                       op.stride, op.padding, 0, P)
            elif op.kind == "bn":
                h = _batch_norm(h, params, buffers, op, train)
            elif op.kind == "view":
                h = h.reshape(B, P * op.shape[0], *op.shape[1:])
                if CHANNELS_LAST:
                    h = h.contiguous(memory_format=torch.channels_last)
            elif op.kind == "act":
                h = _act(h, op.act, op.slope)
        if not stacked:
            h = _to_stacked(h, P)
        return h.reshape(P, B) if self.discriminator else h


def _to_grouped(h: torch.Tensor) -> torch.Tensor:
    """``[P, B, C, ...]`` (or ``[P, B, F]``) → ``[B, P·C, ...]``; images in channels-last
    memory (one copy), where oneDNN's grouped kernels are fastest on CPU."""
    P, B = h.shape[0], h.shape[1]
    if h.dim() == 5 and CHANNELS_LAST:
        H, W = h.shape[3], h.shape[4]
        return h.permute(1, 3, 4, 0, 2).reshape(B, H, W, -1).permute(0, 3, 1, 2)
    return h.transpose(0, 1).reshape(B, P * h.shape[2], *h.shape[3:])


def _weight(w: torch.Tensor) -> torch.Tensor:
    """Stacked ``[P, A, B, k, k]`` conv weights as one grouped weight ``[P·A, B, k, k]``."""
    w = w.reshape(-1, *w.shape[2:])
    return w.contiguous(memory_format=torch.channels_last) if CHANNELS_LAST else w


def _to_stacked(h: torch.Tensor, P: int) -> torch.Tensor:
    """``[B, P·C, ...]`` → ``[P, B, C, ...]``."""
    B = h.shape[0]
    return h.reshape(B, P, h.shape[1] // P, *h.shape[2:]).transpose(0, 1)


def _batch_norm(h, params, buffers, op: _Op, train: bool) -> torch.Tensor:
    """Per-member BatchNorm over the grouped channels; running stats updated in place (train)."""
    mean, var = buffers[op.key + ".running_mean"], buffers[op.key + ".running_var"]
    if train:
        buffers[op.key + ".num_batches_tracked"].add_(1)
    return F.batch_norm(h, mean.view(-1), var.view(-1), params[op.key + ".weight"].reshape(-1),
                        params[op.key + ".bias"].reshape(-1), train, op.momentum, op.eps)


def _act(h: torch.Tensor, act: str | None, slope: float) -> torch.Tensor:
    if act == "leaky":
        return F.leaky_relu(h, slope)
    if act == "tanh":
        return torch.tanh(h)
    if act == "sigmoid":
        return torch.sigmoid(h)
    if act == "relu":
        return F.relu(h)
    return h


def conv_plan(template: nn.Module) -> ConvPlan | None:
    """The plan of a DCGAN generator/discriminator of mustangs.pool.networks (the unconditional
    ones), or None for anything else."""
    from mustangs.pool.networks import (DCGAN28Discriminator, DCGAN28Generator, DCGAN64Discriminator,
                                        DCGAN64Generator)

    kind = type(template)
    if kind not in (DCGAN28Generator, DCGAN28Discriminator, DCGAN64Generator, DCGAN64Discriminator):
        return None
    ops: list[_Op] = []
    for name, mod in template.named_modules():
        if list(mod.children()):
            continue
        if kind is DCGAN28Generator and name == "conv.0":
            ops.append(_Op("view", shape=(128, 7, 7)))
        if isinstance(mod, nn.Linear):
            ops.append(_Op("linear", name))
        elif isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            if mod.groups != 1 or mod.dilation != (1, 1) or mod.bias is None or mod.stride[0] != mod.stride[1] \
                    or mod.padding[0] != mod.padding[1] or getattr(mod, "output_padding", (0, 0)) != (0, 0):
                return None
            ops.append(_Op("convT" if isinstance(mod, nn.ConvTranspose2d) else "conv", name,
                           mod.stride[0], mod.padding[0]))
        elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not (mod.affine and mod.track_running_stats) or mod.momentum is None:
                return None
            ops.append(_Op("bn", name, eps=mod.eps, momentum=mod.momentum))
        elif isinstance(mod, nn.Flatten):
            ops.append(_Op("flatten"))
        elif type(mod) in _ACTS:
            ops.append(_Op("act", act=_ACTS[type(mod)], slope=float(getattr(mod, "negative_slope", 0.0))))
        else:
            return None
    in_view = (template.latent_dim, 1, 1) if kind is DCGAN64Generator else None
    return ConvPlan(tuple(ops), in_view, kind in (DCGAN28Discriminator, DCGAN64Discriminator))


def grouped_supported(template: nn.Module) -> bool:
    """Whether the ``grouped`` engine can run ``template`` (the unconditional DCGANs)."""
    return conv_plan(template) is not None
