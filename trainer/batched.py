"""A population of same-architecture networks with stacked parameters, and a batched Adam.

Every tensor of a :class:`NetState` has a leading population axis ``[P, ...]``: parameters,
buffers (BatchNorm running stats), Adam moments and step counts. :class:`StackedNet`
applies all members at once — for MLPs as one batched GEMM per layer (``engine="bmm"``, the
fastest on CPU: within ~1.3x of the bare matmuls, benchmarks/RESULTS-trainer.md), for any
architecture through ``torch.func.vmap`` over ``functional_call`` — or, as the reference,
one after the other (``engine="loop"``); all give the same numbers (tests/test_batched.py).
:func:`adam_step` is Adam over the population axis with a per-member learning rate tensor,
so a mutated learning rate is by construction the one the next step uses; ``fused=True``
(config ``adam: fused``, the default) runs PyTorch's fused kernel per member, ``False`` the
same formula op by op (other rounding; reproduces runs recorded before fused was the default).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

ENGINES = ("bmm", "grouped", "vmap", "loop")


@dataclass
class NetState:
    """Stacked state of ``P`` networks: params, buffers, Adam moments ``m``/``v``, Adam ``step`` [P]."""

    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    m: dict[str, torch.Tensor]
    v: dict[str, torch.Tensor]
    step: torch.Tensor  # [P] float64, Adam steps taken

    @classmethod
    def from_modules(cls, modules: list[nn.Module]) -> "NetState":
        """Stack freshly built modules (fresh Adam state: zero moments, step 0)."""
        params, buffers = stack_module_state(modules)
        params = {k: v.detach().clone() for k, v in params.items()}
        buffers = {k: v.detach().clone() for k, v in buffers.items()}
        device = next(iter(params.values())).device
        return cls(params, buffers, {k: torch.zeros_like(v) for k, v in params.items()},
                   {k: torch.zeros_like(v) for k, v in params.items()},
                   torch.zeros(len(modules), dtype=torch.float64, device=device))

    def __len__(self) -> int:
        return int(self.step.shape[0])

    def tensors(self) -> dict[str, torch.Tensor]:
        """All tensors under flat names (``params.x``, ``buffers.x``, ``m.x``, ``v.x``, ``step``)."""
        out = {f"params.{k}": t for k, t in self.params.items()}
        out.update({f"buffers.{k}": t for k, t in self.buffers.items()})
        out.update({f"m.{k}": t for k, t in self.m.items()})
        out.update({f"v.{k}": t for k, t in self.v.items()})
        out["step"] = self.step
        return out

    @classmethod
    def from_tensors(cls, flat: dict[str, torch.Tensor]) -> "NetState":
        """Inverse of :meth:`tensors`."""
        parts: dict[str, dict[str, torch.Tensor]] = {"params": {}, "buffers": {}, "m": {}, "v": {}}
        for name, t in flat.items():
            if name == "step":
                continue
            kind, _, key = name.partition(".")
            parts[kind][key] = t
        return cls(parts["params"], parts["buffers"], parts["m"], parts["v"], flat["step"])

    def map(self, fn) -> "NetState":
        """A new state with ``fn`` applied to every tensor."""
        return NetState({k: fn(t) for k, t in self.params.items()}, {k: fn(t) for k, t in self.buffers.items()},
                        {k: fn(t) for k, t in self.m.items()}, {k: fn(t) for k, t in self.v.items()}, fn(self.step))

    def index(self, idx: torch.Tensor) -> "NetState":
        """Copies of members ``idx`` (a long tensor), Adam state included."""
        idx = idx.to(self.step.device)
        return self.map(lambda t: t.index_select(0, idx))

    def where(self, take: torch.Tensor, other: "NetState") -> "NetState":
        """Member-wise choice: ``self`` where ``take`` [P] is true, else ``other``."""
        take = take.to(self.step.device)

        def pick(a, b):
            return torch.where(take.view(-1, *([1] * (a.dim() - 1))), a, b)

        return NetState({k: pick(a, other.params[k]) for k, a in self.params.items()},
                        {k: pick(a, other.buffers[k]) for k, a in self.buffers.items()},
                        {k: pick(a, other.m[k]) for k, a in self.m.items()},
                        {k: pick(a, other.v[k]) for k, a in self.v.items()}, pick(self.step, other.step))

    def to(self, device) -> "NetState":
        """The state on ``device``."""
        return self.map(lambda t: t.to(device))

    def member_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i`` as an ordinary ``state_dict`` (params and buffers)."""
        out = {k: t[i].detach().clone() for k, t in self.params.items()}
        out.update({k: t[i].detach().clone() for k, t in self.buffers.items()})
        return out


class StackedNet:
    """Applies a population of networks with stacked parameters to per-member inputs.

    ``apply(params, buffers, x)`` maps ``x [P, B, ...]`` to ``[P, B, ...]``. In train mode,
    BatchNorm buffers (running stats) are updated in place in ``buffers``. Engines:

    * ``bmm``  one batched GEMM per layer for all members (``torch.baddbmm`` over the stacked
      weights, bias folded into the GEMM, activation applied in place, hand-written backward
      that returns contiguous weight gradients); MLP architectures only (:func:`bmm_supported`).
    * ``grouped`` one grouped convolution per layer for all members (trainer/grouped.py, HFTA's
      horizontal fusion), BatchNorm per member, Linear as one batched GEMM; the unconditional
      DCGANs only (:func:`trainer.grouped.grouped_supported`).
    * ``vmap`` ``torch.func.vmap`` over ``functional_call``: any architecture.
    * ``loop`` one member after the other: the reference the other two are tested against.
    """

    def __init__(self, template: nn.Module, engine: str = "vmap"):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self._plan = _mlp_plan(template) if engine == "bmm" else None
        if engine == "bmm" and self._plan is None:
            raise ValueError(f"engine 'bmm' runs MLP networks only, not {type(template).__name__}; use 'vmap'")
        self._conv = None
        if engine == "grouped":
            from trainer.grouped import conv_plan

            self._conv = conv_plan(template)
            if self._conv is None:
                raise ValueError(f"engine 'grouped' runs the unconditional DCGAN networks only, "
                                 f"not {type(template).__name__}; use 'vmap'")
        self.engine = engine
        base = copy.deepcopy(template).to("meta")
        self._train = base.train()
        self._eval = copy.deepcopy(base).eval()

    def apply(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor,
              train: bool, out: torch.Tensor | None = None) -> torch.Tensor:
        """Run member ``i`` on ``x[i]`` for every member (train or eval mode); with ``out`` (no
        autograd), the result is written there (the ``bmm`` engine's last GEMM writes it directly)."""
        if self._plan is not None:
            return self._plan.apply(params, x, out)
        if self._conv is not None:
            y = self._conv.apply(params, buffers, x, train)
            return y if out is None else out.copy_(y)
        y = self._apply(params, buffers, x, train)
        return y if out is None else out.copy_(y)

    def _apply(self, params, buffers, x, train):
        module = self._train if train else self._eval

        def one(p, b, xi):
            return functional_call(module, (p, b), (xi,))

        if self.engine == "vmap":
            return vmap(one, in_dims=(0, 0, 0), randomness="error")(params, buffers, x)
        outs = []
        for i in range(x.shape[0]):
            outs.append(one({k: t[i] for k, t in params.items()}, {k: t[i] for k, t in buffers.items()}, x[i]))
        return torch.stack(outs)


def bmm_supported(template: nn.Module) -> bool:
    """Whether the ``bmm`` engine can run ``template`` (the MLP generators/discriminators)."""
    return _mlp_plan(template) is not None


# --------------------------------------------------------------------------- the bmm engine

_ACTS = {nn.LeakyReLU: "leaky", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.ReLU: "relu", nn.Identity: None}


@dataclass(frozen=True)
class _MLPPlan:
    """An MLP as a list of ``(weight key, bias key, activation, leaky slope)`` plus how the
    network shapes its input and output: generators view the last layer as ``out_shape``,
    discriminators flatten their input and drop the output's unit dim."""

    layers: tuple[tuple[str, str, str | None, float], ...]
    out_shape: tuple[int, ...] | None   # generator sample shape; None = discriminator (→ [P, B])

    def apply(self, params: dict[str, torch.Tensor], x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        P, B = x.shape[0], x.shape[1]
        h = x.reshape(P, B, -1)
        last = len(self.layers) - 1
        for i, (wk, bk, act, slope) in enumerate(self.layers):
            h = _linear_act(h, params[wk], params[bk], act, slope, out.view(h.shape[0], h.shape[1], -1)
                            if out is not None and i == last else None)
        if out is not None:
            return out
        return h.view(P, B, *self.out_shape) if self.out_shape is not None else h.squeeze(-1)


def _mlp_plan(template: nn.Module) -> _MLPPlan | None:
    """The plan of an MLP generator/discriminator of mustangs.pool.networks, or None for anything else."""
    from mustangs.pool.networks import MLPDiscriminator, MLPGenerator

    if not isinstance(template, (MLPGenerator, MLPDiscriminator)):
        return None
    mods = list(template.net)
    layers = []
    i = 0
    while i < len(mods):
        lin = mods[i]
        if not isinstance(lin, nn.Linear) or lin.bias is None:
            return None
        act_mod = mods[i + 1] if i + 1 < len(mods) else nn.Identity()
        if type(act_mod) not in _ACTS:
            return None
        slope = float(getattr(act_mod, "negative_slope", 0.0))
        layers.append((f"net.{i}.weight", f"net.{i}.bias", _ACTS[type(act_mod)], slope))
        i += 2 if i + 1 < len(mods) and not isinstance(mods[i + 1], nn.Linear) else 1
    out_shape = tuple(template.sample_shape) if isinstance(template, MLPGenerator) else None
    return _MLPPlan(tuple(layers), out_shape)


def _act_(y: torch.Tensor, act: str | None, slope: float) -> torch.Tensor:
    """The activation, in place on a fresh GEMM output."""
    if act == "leaky":
        return torch.nn.functional.leaky_relu_(y, slope)
    if act == "tanh":
        return y.tanh_()
    if act == "sigmoid":
        return y.sigmoid_()
    if act == "relu":
        return y.relu_()
    return y


def _act_backward(g: torch.Tensor, y: torch.Tensor, act: str | None, slope: float) -> torch.Tensor:
    """Gradient through the activation from its *output* ``y`` (one fused kernel each)."""
    if act == "leaky":
        return torch.ops.aten.leaky_relu_backward(g, y, slope, True)
    if act == "tanh":
        return torch.ops.aten.tanh_backward(g, y)
    if act == "sigmoid":
        return torch.ops.aten.sigmoid_backward(g, y)
    if act == "relu":
        return torch.ops.aten.threshold_backward(g, y, 0.0)
    return g


class _LinearAct(torch.autograd.Function):
    """``act(x @ Wᵀ + b)`` for all members at once: x ``[P, B, in]``, W ``[P, out, in]``, b ``[P, out]``.

    Forward is one ``baddbmm`` (bias in the GEMM) and the activation in place; backward goes
    through the activation from the saved output and returns W's gradient as ``gᵀ x``, which
    is laid out like W (contiguous), so fused Adam needs no copy. Input and weight gradients
    are computed only when asked for.
    """

    @staticmethod
    def forward(ctx, x, w, b, act, slope):
        y = _act_(torch.baddbmm(b.unsqueeze(1), x, w.mT), act, slope)
        ctx.save_for_backward(x, w, y)
        ctx.act, ctx.slope = act, slope
        return y

    @staticmethod
    def backward(ctx, gy):
        x, w, y = ctx.saved_tensors
        g = _act_backward(gy, y, ctx.act, ctx.slope)
        gx = torch.bmm(g, w) if ctx.needs_input_grad[0] else None
        gw = torch.bmm(g.mT, x) if ctx.needs_input_grad[1] else None
        gb = g.sum(1) if ctx.needs_input_grad[2] else None
        return gx, gw, gb, None, None


def _linear_act(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, act: str | None, slope: float,
                out: torch.Tensor | None = None) -> torch.Tensor:
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or b.requires_grad):
        if out is not None:
            raise ValueError("out= is for passes without autograd")
        return _LinearAct.apply(x, w, b, act, slope)
    if out is None:
        return _act_(torch.baddbmm(b.unsqueeze(1), x, w.mT), act, slope)
    return _act_(torch.baddbmm(b.unsqueeze(1), x, w.mT, out=out), act, slope)


@torch.no_grad()
def adam_step(state: NetState, grads: dict[str, torch.Tensor], lr: torch.Tensor,
              betas: Iterable[float] = (0.5, 0.999), eps: float = 1e-8, fused: bool = False) -> None:
    """One Adam step (torch.optim.Adam's formula) for every member, in place.

    ``lr`` is ``[P]`` (float64): each member steps with its own learning rate, read at this
    call, so whatever rate the cell holds now is the rate applied. With ``fused`` (and a build
    that has it for the device) PyTorch's fused Adam kernel runs once per member: one pass over
    memory instead of about nine.
    """
    state.step.add_(1.0)
    if fused and _can_fuse(state):
        # The fused kernel walks memory as if contiguous (true of .grad in torch.optim, not of
        # autograd.grad under vmap, whose weight grads come transposed).
        _adam_fused(state, {k: g.contiguous() for k, g in grads.items()}, lr, tuple(betas), eps)
    else:
        _adam_ops(state, grads, lr, tuple(betas), eps)


def _can_fuse(state: NetState) -> bool:
    """Fused updates write through per-member views, so the state must be contiguous (as
    NetState always builds it) and the kernel must run on this device and dtype."""
    first = next(iter(state.params.values()))
    contiguous = all(t.is_contiguous() for part in (state.params, state.m, state.v) for t in part.values())
    return contiguous and _fused_available(first.device, first.dtype)


def _adam_fused(state: NetState, grads, lr: torch.Tensor, betas: tuple[float, float], eps: float) -> None:
    names = list(state.params)
    steps = state.step.to(torch.float32)  # the fused kernels' step type (as torch.optim keeps it); exact to 2^24
    for c, lr_c in enumerate(lr.tolist()):
        torch._fused_adam_([state.params[k][c] for k in names], [grads[k][c] for k in names],
                           [state.m[k][c] for k in names], [state.v[k][c] for k in names], [],
                           [steps[c]] * len(names), lr=lr_c, beta1=betas[0], beta2=betas[1],
                           weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)


def _adam_ops(state: NetState, grads, lr: torch.Tensor, betas: tuple[float, float], eps: float) -> None:
    b1, b2 = betas
    bc1 = 1.0 - b1 ** state.step
    bc2_sqrt = (1.0 - b2 ** state.step).sqrt()
    step_size = lr.to(torch.float64) / bc1
    for k, p in state.params.items():
        g = grads[k]
        m, v = state.m[k], state.v[k]
        shape = (-1,) + (1,) * (p.dim() - 1)
        m.lerp_(g, 1.0 - b1)
        v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
        denom = (v.sqrt() / bc2_sqrt.to(p.dtype).view(shape)).add_(eps)
        p.sub_(step_size.to(p.dtype).view(shape) * (m / denom))


_FUSED: dict[tuple[str, torch.dtype], bool] = {}


def _fused_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``torch._fused_adam_`` runs here (probed once per device type and dtype on a
    scratch tensor, so a build or device without it never touches real state)."""
    key = (device.type, dtype)
    if key not in _FUSED:
        ok = hasattr(torch, "_fused_adam_")
        if ok:
            z = lambda: {"w": torch.zeros(1, 2, device=device, dtype=dtype)}  # noqa: E731
            scratch = NetState(z(), {}, z(), z(), torch.zeros(1, dtype=torch.float64, device=device))
            try:
                _adam_fused(scratch, z(), torch.full((1,), 1e-3, dtype=torch.float64), (0.5, 0.999), 1e-8)
            except (RuntimeError, NotImplementedError, TypeError):
                ok = False
        _FUSED[key] = ok
    return _FUSED[key]
