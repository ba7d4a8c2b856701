"""The convolution floor of a DCGAN coevolution generation: its convolutions and GEMMs, run bare.

The ``grouped`` engine (trainer/grouped.py) runs every layer of all cells as one grouped
convolution (or one batched GEMM for Linear layers). :class:`ConvFloor` issues exactly those
calls, with the shapes and groups the engine uses, on preallocated random operands:
forward passes, ``aten.convolution_backward`` for the input and weight gradients a step needs,
and one fused Adam call per optimiser step. What it leaves out (BatchNorm, activations, losses,
layout copies, Python, selection bookkeeping) is what ``generation / floor`` measures.

The call list follows design.md §3 with the selected adversary, as benchmarks/floor.py does for
MLPs: per mini-batch a G step (G and D forward on B rows, D input gradients, G input and weight
gradients, Adam) and, on ``d_steps`` of them, a D step (G forward, D forward on 2B rows, D weight
gradients and input gradients past the first layer, Adam); once per generation the fitness
(every G of the ``sub``-member sub-population on B rows, every D on the fakes of all of them plus
the real batch) and, with selection, the replacement evaluations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Layer:
    """One compute layer of a network, per member: ``kind`` conv | convT | linear."""

    kind: str
    in_shape: tuple[int, ...]     # per sample: (C, H, W) or (F,)
    weight: tuple[int, ...]       # per member, as the module stores it
    stride: int = 1
    padding: int = 0


def layers_of(template: nn.Module, sample_input: torch.Tensor) -> list[Layer]:
    """The conv / transposed-conv / linear layers of ``template`` in call order, with their input shapes."""
    found: list[Layer] = []

    def hook(mod, inp, _out):
        shape = tuple(inp[0].shape[1:])
        if isinstance(mod, nn.Linear):
            found.append(Layer("linear", (int(torch.tensor(shape).prod()),), tuple(mod.weight.shape)))
        else:
            found.append(Layer("convT" if isinstance(mod, nn.ConvTranspose2d) else "conv", shape,
                               tuple(mod.weight.shape), mod.stride[0], mod.padding[0]))

    handles = [m.register_forward_hook(hook) for m in template.modules()
               if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        template.eval()(sample_input)
    for h in handles:
        h.remove()
    return found


class _Net:
    """Operands of one network's layers for ``members`` members on ``rows`` rows (grouped layout)."""

    def __init__(self, layers: list[Layer], members: int, rows: int, g: torch.Generator):
        self.layers, self.P, self.n = layers, members, rows
        self.x, self.w, self.b, self.y = [], [], [], []
        for L in layers:
            P = members
            if L.kind == "linear":
                self.x.append(torch.randn(P, rows, L.in_shape[0], generator=g))
                self.w.append(torch.randn(P, *L.weight, generator=g))
                self.b.append(torch.randn(P, 1, L.weight[0], generator=g))
                self.y.append(torch.empty(P, rows, L.weight[0]))
            else:
                C, H, W = L.in_shape
                self.x.append(torch.randn(rows, P * C, H, W, generator=g))
                self.w.append(torch.randn(P * L.weight[0], *L.weight[1:], generator=g))
                self.b.append(torch.randn(P * (L.weight[1] if L.kind == "convT" else L.weight[0]), generator=g))
                self.y.append(self._conv(len(self.y)))

    def _conv(self, i):
        L = self.layers[i]
        if L.kind == "convT":
            return F.conv_transpose2d(self.x[i], self.w[i], self.b[i], L.stride, L.padding, 0, self.P)
        return F.conv2d(self.x[i], self.w[i], self.b[i], L.stride, L.padding, 1, self.P)

    def forward(self) -> None:
        for i, L in enumerate(self.layers):
            if L.kind == "linear":
                torch.baddbmm(self.b[i], self.x[i], self.w[i].mT, out=self.y[i])
            else:
                self._conv(i)

    def backward(self, weights: bool, first_input: bool) -> None:
        """Input gradients (past the first layer unless ``first_input``) and, with ``weights``,
        weight and bias gradients, last layer first."""
        for i in reversed(range(len(self.layers))):
            L, gy = self.layers[i], self.y[i]
            want_x = i > 0 or first_input
            if L.kind == "linear":
                if want_x:
                    torch.bmm(gy, self.w[i])
                if weights:
                    torch.bmm(gy.mT, self.x[i])
                    gy.sum(1)
                continue
            if not (want_x or weights):
                continue
            torch.ops.aten.convolution_backward(
                gy, self.x[i], self.w[i], [self.b[i].shape[0]], [L.stride] * 2, [L.padding] * 2, [1, 1],
                L.kind == "convT", [0, 0], self.P, [want_x, weights, weights])


class _Adam:
    """One fused Adam call over all members' parameters (one learning rate: the bare kernel)."""

    def __init__(self, layers: list[Layer], members: int, g: torch.Generator):
        shapes = [(members, *L.weight) for L in layers]
        shapes += [(members, L.weight[1] if L.kind == "convT" else L.weight[0]) for L in layers]
        self.p, self.g, self.m, self.v = ([torch.randn(*s, generator=g) for s in shapes] for _ in range(4))
        self.step = torch.tensor(1.0)

    def run(self) -> None:
        torch._fused_adam_(self.p, self.g, self.m, self.v, [], [self.step] * len(self.p), lr=1e-4, beta1=0.5,
                           beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)


class ConvFloor:
    """The bare grouped convolutions, GEMMs and Adam calls of one generation of a DCGAN grid."""

    def __init__(self, g_layers: list[Layer], d_layers: list[Layer], cells: int, sub: int, batch: int,
                 batches: int, d_steps: int, selection: bool = True, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        C, S, B = cells, sub, batch
        self.batches, self.d_steps, self.selection = batches, d_steps, selection
        self.g_step_g, self.g_step_d = _Net(g_layers, C, B, g), _Net(d_layers, C, B, g)
        self.d_step_g, self.d_step_d = self.g_step_g, _Net(d_layers, C, 2 * B, g)
        self.fit_g, self.fit_d = _Net(g_layers, C * S, B, g), _Net(d_layers, C * S, (S + 1) * B, g)
        if selection:
            self.rep = [self.g_step_g, _Net(d_layers, C * S, 2 * B, g), self.fit_g, _Net(d_layers, C, (S + 1) * B, g)]
        self.adam_g, self.adam_d = _Adam(g_layers, C, g), _Adam(d_layers, C, g)

    def run(self) -> float:
        """One generation's worth of calls; returns the CPU-seconds it took."""
        t0 = time.process_time()
        self.fit_g.forward()                                   # fitness
        self.fit_d.forward()
        for b in range(self.batches):
            self.g_step_g.forward()                            # G step
            self.g_step_d.forward()
            self.g_step_d.backward(weights=False, first_input=True)
            self.g_step_g.backward(weights=True, first_input=False)
            self.adam_g.run()
            if b < self.d_steps:                               # D step
                self.d_step_g.forward()
                self.d_step_d.forward()
                self.d_step_d.backward(weights=True, first_input=False)
                self.adam_d.run()
        if self.selection:                                     # replacement evaluations
            for net in self.rep:
                net.forward()
        return time.process_time() - t0
