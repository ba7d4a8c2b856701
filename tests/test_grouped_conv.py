"""The ``grouped`` engine (trainer/grouped.py) equals the per-cell modules: forward, grads, Adam, BatchNorm."""

from __future__ import annotations

import copy

import pytest
import torch

from mustangs.errors import ConfigError
from mustangs.pool.networks import NetSpec, build_discriminator, build_generator
from trainer.batched import NetState, StackedNet, adam_step
from trainer.config import load_train_config
from trainer.grouped import grouped_supported

from conftest import needs_fashion


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py: small tests, one torch thread


SPEC = NetSpec("dcgan28", 16, (1, 28, 28))
#: A bias right before BatchNorm has zero true gradient; Adam turns float noise there into
#: lr-sized steps (as in tests/test_batched.py), so those biases are checked through the outputs
#: of the next step, where batch statistics cancel them exactly.
PRE_BN = {"fc.0.bias", "conv.0.bias"}


def _close(a, b, rtol=1e-4, atol=1e-5):
    """Within float tolerance, relative to the tensor's scale (grads of a sum over a batch are large)."""
    return (a - b).abs().max().item() <= atol + rtol * b.abs().max().item()


@pytest.mark.parametrize("build", [build_generator, build_discriminator], ids=["G", "D"])
def test_grouped_equals_per_cell_modules_forward_backward_adam_and_batchnorm(build):
    torch.manual_seed(0)
    P, B = 3, 6
    nets = [build(SPEC) for _ in range(P)]
    state = NetState.from_modules(nets)
    ref = [copy.deepcopy(n).train() for n in nets]
    lrs = torch.tensor([1e-3, 2e-3, 5e-3], dtype=torch.float64)
    opts = [torch.optim.Adam(r.parameters(), lr=float(lr), betas=(0.5, 0.999)) for r, lr in zip(ref, lrs)]
    net = StackedNet(nets[0], "grouped")
    x = torch.randn(P, B, 16) if build is build_generator else torch.randn(P, B, 1, 28, 28)
    weight = torch.randn(P, B, *([1, 28, 28] if build is build_generator else []))
    for step in range(2):   # two steps: the second runs on moved weights and updated running stats
        params = {k: t.detach().requires_grad_(True) for k, t in state.params.items()}
        y = net.apply(params, state.buffers, x, train=True)
        grads = dict(zip(params, torch.autograd.grad((y * weight).sum(), list(params.values()))))
        for i, (r, o) in enumerate(zip(ref, opts)):
            o.zero_grad()
            yi = r(x[i])
            assert _close(y[i].detach(), yi.detach()), ("forward", step, i)
            (yi * weight[i]).sum().backward()
            for name, p in r.named_parameters():
                assert grads[name].shape == state.params[name].shape
                if name in PRE_BN:   # true gradient 0: both are float noise
                    assert grads[name][i].abs().max() < 1e-3 and p.grad.abs().max() < 1e-3, name
                else:
                    assert _close(grads[name][i], p.grad), ("grad", step, i, name)
            o.step()
        adam_step(state, grads, lrs, (0.5, 0.999), fused=True)
        for i, r in enumerate(ref):
            for name, p in r.named_parameters():
                if name not in PRE_BN:
                    assert _close(state.params[name][i], p.detach(), atol=1e-6), ("adam", step, i, name)
            for name, b in r.named_buffers():   # BatchNorm running stats and counters, per cell
                if "running_mean" in name and step > 0:   # tracks the pre-BN biases (see PRE_BN)
                    continue
                assert torch.allclose(state.buffers[name][i].double(), b.double(), atol=1e-6), ("buffer", name)
    # eval mode on the reference modules' own state (the pre-BN biases differ by noise): running stats, no update
    state = NetState.from_modules(ref)
    before = {k: v.clone() for k, v in state.buffers.items()}
    with torch.no_grad():
        y = net.apply(state.params, state.buffers, x, train=False)
        for i, r in enumerate(ref):
            assert _close(y[i], r.eval()(x[i])), ("eval", i)
    assert all(torch.equal(before[k], state.buffers[k]) for k in before)
    if build is build_generator:
        assert any("running_var" in k for k in state.buffers) and state.buffers["fc.1.num_batches_tracked"].tolist() == [2] * P


def test_grouped_writes_out_and_refuses_what_it_cannot_run():
    nets = [build_generator(SPEC) for _ in range(2)]
    st = NetState.from_modules(nets)
    z = torch.randn(2, 4, 16)
    out = torch.empty(2, 4, 1, 28, 28)
    with torch.no_grad():
        StackedNet(nets[0], "grouped").apply(st.params, st.buffers, z, train=True, out=out)
    assert torch.isfinite(out).all()
    assert grouped_supported(build_discriminator(NetSpec("dcgan64", 100, (3, 64, 64))))
    assert not grouped_supported(build_generator(NetSpec("mlp", 16, (1, 28, 28))))
    assert not grouped_supported(build_generator(NetSpec("dcgan28", 16, (1, 28, 28), ("a", "b"))))
    with pytest.raises(ValueError, match="grouped"):
        StackedNet(build_generator(NetSpec("mlp", 16, (1, 28, 28))), "grouped")
    with pytest.raises(ConfigError, match="batching=grouped"):
        load_train_config(None, ["batching=grouped", "network.arch=mlp"])


@needs_fashion
@pytest.mark.slow
def test_trainer_train_runs_a_dcgan28_grid_on_the_grouped_engine(tmp_path):
    from trainer.cli import main
    from mustangs.pool.format import read_pool

    over = ["threads=1", "batching=grouped", "network.arch=dcgan28", "grid.height=2", "grid.width=2",
            "data.sampling_ratio=0.005", "data.batch_size=20", "coevolution.batches_per_generation=2",
            "coevolution.generations=2", "mixture.eval_samples=100", "eval.fid_samples=100",
            "output.samples_per_cell=2", "output.report=false"]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("# test config\n")
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--quiet", *over]) == 0
    pool = read_pool(tmp_path / "run" / "pool")
    assert len(pool) == 4 and pool.load_generator(0)(torch.randn(2, 64)).shape == (2, 1, 28, 28)
