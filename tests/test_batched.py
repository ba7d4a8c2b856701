"""Batched population: functional Adam, lr mutation reaching the optimizer, batched == per-cell loop."""

from __future__ import annotations

import copy

import pytest
import torch

from mustangs.data.datasets import ArrayDataset
from mustangs.pool.networks import NetSpec, build_discriminator, build_generator
from trainer import losses
from trainer.batched import NetState, StackedNet, adam_step
from trainer.coevolution import Coevolution, _weights
from trainer.config import load_train_config


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py: small tests, one torch thread


def fake_images(n=300, seed=0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    return ArrayDataset("fashion-mnist", torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
                        torch.zeros(n, dtype=torch.long), 10)


def make(overrides=(), engine=None, data=None):
    cfg = load_train_config(None, ["grid.height=2", "grid.width=2", "data.batch_size=16",
                                   "coevolution.batches_per_generation=3", *overrides])
    return Coevolution(cfg, data or fake_images(), "cpu", engine=engine)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("transposed_grads", [False, True])
def test_adam_step_matches_torch_adam_with_per_member_lrs(monkeypatch, fused, transposed_grads):
    # Both kernels (fused, op by op), and grads laid out as autograd.grad gives them under vmap
    # (weights transposed in memory), which a fused kernel reading raw memory would garble.
    import trainer.batched as batched

    monkeypatch.setattr(batched, "_FUSED", {})
    torch.manual_seed(0)
    nets = [torch.nn.Linear(5, 3) for _ in range(3)]
    state = NetState.from_modules(nets)
    lrs = torch.tensor([1e-3, 5e-3, 2e-2], dtype=torch.float64)
    ref = [copy.deepcopy(n) for n in nets]
    opts = [torch.optim.Adam(r.parameters(), lr=float(lr), betas=(0.5, 0.999)) for r, lr in zip(ref, lrs)]
    for step in range(5):
        grads = {k: torch.randn_like(v) for k, v in state.params.items()}
        if transposed_grads:
            grads = {k: g.transpose(-1, -2).contiguous().transpose(-1, -2) if g.dim() == 3 else g
                     for k, g in grads.items()}
            assert not grads["weight"].is_contiguous()
        adam_step(state, grads, lrs, (0.5, 0.999), fused=fused)
        for i, (r, o) in enumerate(zip(ref, opts)):
            for name, p in r.named_parameters():
                p.grad = grads[name][i].clone()
            o.step()
    for i, r in enumerate(ref):
        for name, p in r.named_parameters():
            assert torch.allclose(state.params[name][i], p.detach(), atol=1e-7), name
    assert state.step.tolist() == [5.0, 5.0, 5.0]
    # the fused kernel really ran (this torch has it on CPU), and op by op never probed for it
    assert batched._FUSED == ({("cpu", torch.float32): hasattr(torch, "_fused_adam_")} if fused else {})


def test_mutated_lr_is_the_one_the_next_step_uses(monkeypatch):
    co = make(["coevolution.mutation_probability=1.0", "coevolution.mutation_scale=0.5"])
    block = co.init_block()
    co.step(block, score=False)
    mutated = block.lr_g.clone()
    assert not torch.allclose(mutated, torch.full_like(mutated, 2e-4))  # every cell's lr moved
    seen = []
    import trainer.coevolution as coev

    real_adam = coev.adam_step
    monkeypatch.setattr(coev, "adam_step",
                        lambda st, g, lr, betas, **kw: (seen.append(lr.clone()), real_adam(st, g, lr, betas, **kw)))
    co.step(block, score=False)
    assert torch.equal(seen[0], mutated)  # first G step of the next generation
    # ... and the magnitude of a fresh Adam step is that lr (|Δp| = lr for a first step)
    st = block.G.map(lambda t: t.clone())
    st.m = {k: torch.zeros_like(v) for k, v in st.m.items()}
    st.v = {k: torch.zeros_like(v) for k, v in st.v.items()}
    st.step.zero_()
    before = {k: v.clone() for k, v in st.params.items()}
    adam_step(st, {k: torch.randn_like(v) for k, v in st.params.items()}, block.lr_g, (0.5, 0.999))
    step_size = (st.params["net.0.weight"] - before["net.0.weight"]).abs().amax(dim=(1, 2))
    assert torch.allclose(step_size.double(), block.lr_g, rtol=1e-3)


def _reference_loop(spec, G, D, adv_D, adv_G, zs_g, zs_d, reals, choice, lr_g, lr_d, betas):
    """Plain per-cell training: nn.Modules, torch.optim.Adam, one cell after the other."""
    out_g, out_d = [], []
    for c in range(len(G)):
        g, d = build_generator(spec), build_discriminator(spec)
        g.load_state_dict(G.member_state_dict(c))
        d.load_state_dict(D.member_state_dict(c))
        ad, ag = build_discriminator(spec), build_generator(spec)
        ad.load_state_dict({k: v[c] for k, v in adv_D[0].items()})
        ag.load_state_dict({k: v[c] for k, v in adv_G[0].items()})
        og = torch.optim.Adam(g.parameters(), lr=float(lr_g[c]), betas=betas)
        od = torch.optim.Adam(d.parameters(), lr=float(lr_d[c]), betas=betas)
        for zg, zd, real in zip(zs_g, zs_d, reals):
            og.zero_grad()
            losses.generator_loss(ad(g(zg[c])), losses.G_LOSSES[int(choice[c])]).backward()
            og.step()
            od.zero_grad()
            with torch.no_grad():
                fake = ag(zd[c])
            losses.discriminator_loss(d(real[c]), d(fake)).backward()
            od.step()
        out_g.append(g.state_dict())
        out_d.append(d.state_dict())
    return out_g, out_d


def test_batched_training_equals_per_cell_loop():
    co = make(["data.batch_size=32"])
    block = co.init_block()
    C = len(block)
    block.lr_g = torch.tensor([1e-4, 2e-4, 5e-4, 1e-3], dtype=torch.float64)
    block.lr_d = torch.tensor([3e-4, 1e-4, 2e-4, 8e-4], dtype=torch.float64)
    roll = torch.tensor([1, 2, 3, 0])
    adv_D, adv_G = _weights(block.D, roll), _weights(block.G, roll.flip(0))
    choice = torch.tensor([0, 1, 2, 1])
    mask = losses.loss_mask(choice)
    g = torch.Generator().manual_seed(5)
    steps = 4
    zs_g = [torch.randn(C, 32, 64, generator=g) for _ in range(steps)]
    zs_d = [torch.randn(C, 32, 64, generator=g) for _ in range(steps)]
    reals = [co.real_batch(torch.randint(0, 300, (C, 32), generator=g)) for _ in range(steps)]
    ref_g, ref_d = _reference_loop(co.spec, block.G, block.D, adv_D, adv_G, zs_g, zs_d, reals, choice,
                                   block.lr_g, block.lr_d, (0.5, 0.999))
    G, D = block.G, block.D
    for zg, zd, real in zip(zs_g, zs_d, reals):
        co.train_batch(G, D, adv_D, zg, mask, block.lr_g, adv_G, zd, real, block.lr_d)
    for c in range(C):
        for k, v in ref_g[c].items():
            assert torch.allclose(G.params[k][c], v, atol=1e-5), (c, k)
        for k, v in ref_d[c].items():
            assert torch.allclose(D.params[k][c], v, atol=1e-5), (c, k)
    # and the cells really moved apart from their start (not a vacuous comparison)
    assert not torch.allclose(G.params["net.4.weight"], co.init_block().G.params["net.4.weight"])


@pytest.mark.parametrize("arch,engine,adversary", [
    ("mlp", "bmm", "selected"), ("mlp", "bmm", "neighbour"), ("mlp", "vmap", "neighbour"),
    ("dcgan28", "vmap", "neighbour"), ("dcgan28", "grouped", "neighbour"), ("rings-mlp", "bmm", "selected")])
def test_whole_generation_batched_equals_loop(arch, engine, adversary):
    # Batch 16: with 4 samples, BatchNorm over near-constant features turns float rounding into
    # 1e-4 differences within two batches, whichever engine or Adam kernel.
    # network.init=torch: under the DCGAN init a handful of fc.0 weights (8 of 1.6M) get gradients
    # that are float noise, which Adam's first step turns into ±lr, like the pre-BN biases below;
    # tests/test_init.py checks the engines under the DCGAN init.
    over = [f"network.arch={arch}", "data.batch_size=16", "coevolution.batches_per_generation=2",
            f"coevolution.adversary={adversary}", "network.init=torch"]
    data, zdim = None, 64
    if arch == "rings-mlp":
        from mustangs.data.datasets import make_rings

        over += ["data.dataset=rings", "network.latent_dim=8"]
        data, zdim = make_rings(300), 8
    blocks = []
    for engine in (engine, "loop"):
        co = make(over, engine=engine, data=data)
        b = co.init_block()
        recs = [co.step(b, score=False) for _ in range(2 if arch == "mlp" else 1)]
        blocks.append((b, recs))
    (b1, r1), (b2, r2) = blocks
    # A bias right before BatchNorm has zero true gradient; Adam turns float noise there into
    # lr-sized steps, so those biases (and the running means that track them) are compared
    # through train-mode outputs, where batch statistics cancel them exactly.
    pre_bn = {"fc.0.bias", "conv.0.bias"} if arch == "dcgan28" else set()
    for k in b1.G.params:
        if k not in pre_bn:
            assert torch.allclose(b1.G.params[k], b2.G.params[k], atol=1e-5), k
    for k in b1.G.buffers:  # BatchNorm running variances and counters under vmap
        if "running_mean" not in k:
            assert torch.allclose(b1.G.buffers[k].double(), b2.G.buffers[k].double(), atol=1e-5), k
    z = torch.randn(4, 6, zdim, generator=torch.Generator().manual_seed(0))
    net = make(over, data=data).Gnet
    x1, x2 = (net.apply(b.G.params, {k: v.clone() for k, v in b.G.buffers.items()}, z, train=True) for b in (b1, b2))
    assert (x1 - x2).abs().max() < 1e-4, (x1 - x2).abs().max()
    for k in b1.D.params:
        assert torch.allclose(b1.D.params[k], b2.D.params[k], atol=1e-5), k
    assert [c["loss_choice"] for c in r1[-1]] == [c["loss_choice"] for c in r2[-1]]


def test_same_seed_same_run_and_cells_start_different():
    a, b = make().init_block(), make().init_block()
    w = a.G.params["net.0.weight"]
    assert torch.equal(w, b.G.params["net.0.weight"])
    assert not torch.equal(w[0], w[1])
    assert not torch.equal(a.data_idx[0], make(["data.sampling_ratio=0.5"]).init_block().data_idx[0][:300])
    c = make(["seed=1"]).init_block()
    assert not torch.equal(w, c.G.params["net.0.weight"])


def test_data_dieting_gives_each_cell_its_own_fixed_subset():
    co = make(["data.sampling_ratio=0.2"])
    b = co.init_block()
    assert b.data_idx.shape == (4, 60)
    assert len({tuple(sorted(r.tolist())) for r in b.data_idx}) == 4
    assert torch.equal(b.data_idx, co.init_block().data_idx)


def test_stacked_net_runs_population_on_its_own_inputs():
    spec = NetSpec("mlp", 8, (1, 28, 28))
    nets = [build_generator(spec) for _ in range(3)]
    st = NetState.from_modules(nets)
    z = torch.randn(3, 5, 8)
    out = StackedNet(nets[0]).apply(st.params, st.buffers, z, train=False)
    for i, n in enumerate(nets):
        assert torch.allclose(out[i], n.eval()(z[i]), atol=1e-6)


def test_fast_fid_equals_pytorch_fid():
    import numpy as np

    from mustangs.judge.metrics import FeatureStats, frechet_distance
    from trainer.scoring import Scorer

    rng = np.random.default_rng(0)

    def stats(shift, scale):
        f = rng.normal(shift, scale, (400, 12)) @ rng.normal(size=(12, 12))
        return FeatureStats(400, f.mean(0), f.T @ f / 400, np.full(3, 1 / 3), np.full(3, 1 / 3), -1.0)

    real, fake = stats(0.0, 1.0), stats(0.3, 1.4)
    sc = Scorer(None, real, None)
    want = frechet_distance(fake.mu, fake.sigma, real.mu, real.sigma)
    assert abs(sc.fid(fake) - want) < 1e-6 * max(1.0, want)
    assert sc.fid(real) < 1e-6 and sc.fid_key(fake) == "fid_cls400"
    # the final scores (Scorer.score) take the same fast form, and keep the other metrics
    scores = sc.score(fake, ("fid", "tvd", "is"))
    assert list(scores) == ["fid_cls400", "tvd_cls400", "is_cls400"]
    assert abs(scores["fid_cls400"] - want) < 1e-6 * max(1.0, want)
    assert scores["tvd_cls400"] == pytest.approx(0.0) and scores["is_cls400"] > 0


def test_config_adam_fused_runs_the_fused_kernel_and_ops_does_not(monkeypatch):
    import trainer.batched as batched

    monkeypatch.setattr(batched, "_FUSED", {})
    calls = []
    real = torch._fused_adam_
    monkeypatch.setattr(torch, "_fused_adam_", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    over = ["coevolution.batches_per_generation=2", "data.batch_size=8"]
    for kernel, expect in (("ops", 0), ("fused", 2 * 2 * 4)):   # 2 batches x (G, D) x 4 cells
        calls.clear()
        co = make(over + [f"adam={kernel}"])
        co.step(co.init_block(), score=False)
        assert len(calls) == expect + (1 if kernel == "fused" else 0), kernel   # + the one-time probe


def test_fitness_samples_sizes_the_fitness_batch_and_defaults_to_the_batch(monkeypatch):
    for over, want in (([], 16), (["coevolution.fitness_samples=40"], 40)):
        co = make(over)
        seen = []
        real_fitness = co.fitness
        monkeypatch.setattr(co, "fitness", lambda G, D, real, z: (seen.append((real.shape[1], z.shape[1])),
                                                                  real_fitness(G, D, real, z))[1])
        co.step(co.init_block(), score=False)
        assert seen and all(s == (want, want) for s in seen), seen


def test_d_skip_every_skips_every_nth_discriminator_step(monkeypatch):
    # the reference's discriminator_skip_each_nth_step: 1 trains D on every other mini-batch
    for over, want in (([], 6), (["coevolution.d_skip_every=2"], 3), (["coevolution.d_skip_every=3"], 4)):
        co = make(["coevolution.batches_per_generation=6", *over])
        calls = []
        real_step = co.discriminator_step
        monkeypatch.setattr(co, "discriminator_step", lambda *a: (calls.append(1), real_step(*a))[1])
        co.step(co.init_block(), score=False)
        assert len(calls) == want, over
