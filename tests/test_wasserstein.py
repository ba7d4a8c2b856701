"""coevolution.loss: wgan | wgan-gp — losses on known inputs, the gradient penalty against autograd,
clipping after every critic step, RMSprop against torch.optim, and batched == per-cell loop."""

from __future__ import annotations

import copy

import pytest
import torch

from mustangs.errors import ConfigError
from mustangs.pool.networks import NetSpec, build_discriminator, build_generator
from trainer import wasserstein
from trainer.batched import NetState
from trainer.coevolution import _weights
from trainer.config import load_train_config

from test_batched import fake_images, make


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py: small tests, one torch thread


def test_losses_on_known_inputs():
    s_real = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    s_fake = torch.tensor([[-1.0, 0.0], [2.0, 4.0]])
    assert wasserstein.critic_loss(s_real, s_fake).tolist() == [-2.5, 3.0]
    assert wasserstein.generator_loss(s_fake).tolist() == [0.5, -3.0]


def test_gradient_penalty_and_its_gradient_match_autograd_on_a_tiny_critic():
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    x = torch.randn(5, 3)
    # by hand: the per-sample input gradient of a one-hidden-layer tanh net is W1ᵀ (w2 ⊙ (1 − h²))
    w1, w2 = critic[0].weight, critic[2].weight[0]
    h = torch.tanh(x @ w1.T + critic[0].bias)
    g = ((1 - h ** 2) * w2) @ w1
    want = ((g.norm(dim=1) - 1) ** 2).mean()
    gp = wasserstein.gradient_penalty(lambda xh: critic(xh).squeeze(-1), x)
    assert torch.allclose(gp, want, atol=1e-6)
    # the penalty's gradient w.r.t. the critic's weights (double backward) equals autograd's on the formula
    params = list(critic.parameters())[:3]   # the last bias does not move input gradients
    got = torch.autograd.grad(gp, params)
    ref = torch.autograd.grad(want, params)
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, atol=1e-6)
    # and equals a finite difference on one weight
    with torch.no_grad():
        w = critic[0].weight
        d = 1e-3
        w[1, 2] += d
        up = wasserstein.gradient_penalty(lambda xh: critic(xh).squeeze(-1), x).detach()
        w[1, 2] -= 2 * d
        down = wasserstein.gradient_penalty(lambda xh: critic(xh).squeeze(-1), x).detach()
        w[1, 2] += d
    assert abs(float((up - down) / (2 * d)) - float(got[0][1, 2])) < 1e-3


def test_interpolate_weights_each_sample():
    real, fake = torch.ones(2, 3, 4), torch.zeros(2, 3, 4)
    eps = torch.tensor([[0.0, 0.5, 1.0], [0.25, 0.75, 1.0]])
    x = wasserstein.interpolate(real, fake, eps)
    assert torch.equal(x[..., 0], eps)


def test_rmsprop_step_matches_torch_rmsprop_with_per_member_lrs():
    torch.manual_seed(0)
    nets = [torch.nn.Linear(5, 3) for _ in range(3)]
    state = NetState.from_modules(nets)
    lrs = torch.tensor([1e-3, 5e-3, 2e-2], dtype=torch.float64)
    ref = [copy.deepcopy(n) for n in nets]
    opts = [torch.optim.RMSprop(r.parameters(), lr=float(lr), alpha=0.99) for r, lr in zip(ref, lrs)]
    for _ in range(5):
        grads = {k: torch.randn_like(v) for k, v in state.params.items()}
        wasserstein.rmsprop_step(state, grads, lrs, 0.99)
        for i, (r, o) in enumerate(zip(ref, opts)):
            for name, p in r.named_parameters():
                p.grad = grads[name][i].clone()
            o.step()
    for i, r in enumerate(ref):
        for name, p in r.named_parameters():
            assert torch.allclose(state.params[name][i], p.detach(), atol=1e-6), name


def test_critic_has_no_sigmoid_and_the_same_parameters():
    spec = NetSpec("mlp", 8, (1, 28, 28))
    torch.manual_seed(0)
    d = build_discriminator(spec)
    torch.manual_seed(0)
    c = build_discriminator(spec, critic=True)
    assert not any(isinstance(m, torch.nn.Sigmoid) for m in c.modules())
    assert all(torch.equal(a, b) for a, b in zip(d.state_dict().values(), c.state_dict().values()))
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(torch.sigmoid(c(x)), d(x))


def test_recipes_and_their_defaults():
    w = load_train_config(None, ["coevolution.loss=wgan"])
    r = wasserstein.resolve("wgan", w.wasserstein)
    assert (r.optimizer, r.lr_g, r.lr_d, r.n_critic, r.clip, r.gp_lambda) == ("rmsprop", 5e-5, 5e-5, 5, 0.01, 0.0)
    gp = wasserstein.resolve("wgan-gp", load_train_config(None, ["coevolution.loss=wgan-gp"]).wasserstein)
    assert (gp.optimizer, gp.lr_g, gp.n_critic, gp.clip, gp.gp_lambda, gp.betas) == ("adam", 1e-4, 5, None, 10.0, (0.0, 0.9))
    assert wasserstein.resolve("bce", w.wasserstein) is None
    with pytest.raises(ConfigError, match="wasserstein.clip=null"):
        load_train_config(None, ["coevolution.loss=wgan-gp", "wasserstein.clip=0.1"])
    with pytest.raises(ConfigError, match="d_skip_every=null"):
        load_train_config(None, ["coevolution.loss=wgan", "coevolution.d_skip_every=2"])
    with pytest.raises(ConfigError, match="batches_per_generation>=5"):
        make(["coevolution.loss=wgan", "coevolution.batches_per_generation=3"])


def test_clipping_applied_after_every_critic_step(monkeypatch):
    co = make(["coevolution.loss=wgan", "coevolution.batches_per_generation=6", "wasserstein.n_critic=3",
               "wasserstein.lr_d=0.5"])   # a huge lr: every step would leave the box without clipping
    seen = []
    real_step = co.discriminator_step

    def spy(D, *a):
        out = real_step(D, *a)
        seen.append(max(float(t.abs().max()) for t in D.params.values()))
        return out

    monkeypatch.setattr(co, "discriminator_step", spy)
    g_calls = []
    real_g = co.generator_step
    monkeypatch.setattr(co, "generator_step", lambda *a: (g_calls.append(1), real_g(*a))[1])
    block = co.init_block()
    co.step(block, score=False)
    assert len(seen) == 6 and all(m <= 0.01 + 1e-9 for m in seen), seen
    assert len(g_calls) == 2    # one generator step per 3 critic steps


def _reference_loop(spec, recipe, G, D, adv_D, adv_G, zs_g, zs_d, reals, epss, lr_g, lr_d):
    """Per cell with nn.Modules and torch.optim: critic step (penalty via autograd on the module,
    clipping) on every batch, a generator step after every n_critic-th."""
    out_g, out_d = [], []
    for c in range(len(G)):
        g, d = build_generator(spec), build_discriminator(spec, critic=True)
        g.load_state_dict(G.member_state_dict(c))
        d.load_state_dict(D.member_state_dict(c))
        ad, ag = build_discriminator(spec, critic=True), build_generator(spec)
        ad.load_state_dict({k: v[c] for part in adv_D for k, v in part.items()})
        ag.load_state_dict({k: v[c] for part in adv_G for k, v in part.items()})
        if recipe.optimizer == "rmsprop":
            og = torch.optim.RMSprop(g.parameters(), lr=float(lr_g[c]), alpha=recipe.alpha)
            od = torch.optim.RMSprop(d.parameters(), lr=float(lr_d[c]), alpha=recipe.alpha)
        else:
            og = torch.optim.Adam(g.parameters(), lr=float(lr_g[c]), betas=recipe.betas)
            od = torch.optim.Adam(d.parameters(), lr=float(lr_d[c]), betas=recipe.betas)
        for b, (zg, zd, real, eps) in enumerate(zip(zs_g, zs_d, reals, epss)):
            od.zero_grad()
            with torch.no_grad():
                fake = ag(zd[c])
            loss = d(fake).mean() - d(real[c]).mean()
            if recipe.gp_lambda:
                e = eps[c].view(-1, 1, 1, 1)
                xh = (e * real[c] + (1 - e) * fake).requires_grad_(True)
                (gx,) = torch.autograd.grad(d(xh).sum(), xh, create_graph=True)
                loss = loss + recipe.gp_lambda * ((gx.flatten(1).norm(dim=1) - 1) ** 2).mean()
            loss.backward()
            od.step()
            if recipe.clip:
                with torch.no_grad():
                    for p in d.parameters():
                        p.clamp_(-recipe.clip, recipe.clip)
            if (b + 1) % recipe.n_critic == 0:
                og.zero_grad()
                (-ad(g(zg[c])).mean()).backward()
                og.step()
        out_g.append(g.state_dict())
        out_d.append(d.state_dict())
    return out_g, out_d


@pytest.mark.parametrize("loss,engine", [("wgan", "bmm"), ("wgan-gp", "bmm"), ("wgan-gp", "vmap"), ("wgan", "loop")])
def test_wasserstein_steps_equal_per_cell_loop(loss, engine):
    co = make([f"coevolution.loss={loss}", "data.batch_size=16", "wasserstein.n_critic=2",
               "coevolution.batches_per_generation=4"], engine=engine)
    block = co.init_block()
    C = len(block)
    block.lr_g = torch.tensor([1e-4, 2e-4, 5e-4, 1e-3], dtype=torch.float64)
    block.lr_d = torch.tensor([3e-4, 1e-4, 2e-4, 8e-4], dtype=torch.float64)
    roll = torch.tensor([1, 2, 3, 0])
    adv_D, adv_G = _weights(block.D, roll), _weights(block.G, roll.flip(0))
    g = torch.Generator().manual_seed(5)
    steps = 4
    zs_g = [torch.randn(C, 16, 64, generator=g) for _ in range(steps)]
    zs_d = [torch.randn(C, 16, 64, generator=g) for _ in range(steps)]
    epss = [torch.rand(C, 16, generator=g) for _ in range(steps)]
    reals = [co.real_batch(torch.randint(0, 300, (C, 16), generator=g)) for _ in range(steps)]
    ref_g, ref_d = _reference_loop(co.spec, co.wgan, block.G, block.D, adv_D, adv_G, zs_g, zs_d, reals, epss,
                                   block.lr_g, block.lr_d)
    G, D = block.G, block.D
    for b, (zg, zd, real, eps) in enumerate(zip(zs_g, zs_d, reals, epss)):
        co.discriminator_step(D, adv_G, zd, real, block.lr_d, eps)
        if (b + 1) % 2 == 0:
            co.generator_step(G, adv_D, zg, None, block.lr_g)
    for c in range(C):
        for k, v in ref_g[c].items():
            assert torch.allclose(G.params[k][c], v, atol=1e-5), (c, k)
        for k, v in ref_d[c].items():
            assert torch.allclose(D.params[k][c], v, atol=1e-5), (c, k)
    assert not torch.allclose(G.params["net.4.weight"], co.init_block().G.params["net.4.weight"])
    assert not torch.allclose(D.params["net.4.weight"], co.init_block().D.params["net.4.weight"])


@pytest.mark.parametrize("arch,engine,loss,adversary", [
    ("mlp", "bmm", "wgan", "selected"), ("mlp", "bmm", "wgan-gp", "selected"),
    ("mlp", "vmap", "wgan-gp", "neighbour"), ("dcgan28", "vmap", "wgan-gp", "selected"),
    ("rings-mlp", "bmm", "wgan-gp", "selected")])
def test_whole_wasserstein_generation_batched_equals_loop(arch, engine, loss, adversary):
    over = [f"network.arch={arch}", "data.batch_size=16", "coevolution.batches_per_generation=4",
            f"coevolution.adversary={adversary}", f"coevolution.loss={loss}", "wasserstein.n_critic=2"]
    data, zdim = None, 64
    if arch == "rings-mlp":
        from mustangs.data.datasets import make_rings

        over += ["data.dataset=rings", "network.latent_dim=8"]
        data, zdim = make_rings(300), 8
    # dcgan28 runs in float64: with β1 = 0 every first Adam step is ±lr whatever the gradient's
    # size, so float32 rounding in BatchNorm's backward (vmap's grouped conv vs the loop's) turns
    # into lr-sized steps on near-zero gradients; in float64 the engines agree to ~1e-14.
    dtype = torch.float64 if arch == "dcgan28" else torch.float32
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        blocks = []
        for eng in (engine, "loop"):
            co = make(over, engine=eng, data=data)
            b = co.init_block()
            recs = [co.step(b, score=False) for _ in range(2 if arch != "dcgan28" else 1)]
            blocks.append((b, recs))
        (b1, r1), (b2, r2) = blocks
        atol = 1e-5 if dtype == torch.float32 else 1e-10
        for k in b1.G.params:
            assert torch.allclose(b1.G.params[k], b2.G.params[k], atol=atol), k
        for k in b1.D.params:
            assert torch.allclose(b1.D.params[k], b2.D.params[k], atol=atol), k
        z = torch.randn(4, 6, zdim, generator=torch.Generator().manual_seed(0))
        net = make(over, data=data).Gnet
        x1, x2 = (net.apply(b.G.params, {k: v.clone() for k, v in b.G.buffers.items()}, z, train=True)
                  for b in (b1, b2))
        assert (x1 - x2).abs().max() < 1e-4
    finally:
        torch.set_default_dtype(old)
    assert [c["loss_choice"] for c in r1[-1]] == [loss] * 4
    assert [c["fitness_g"] for c in r1[-1]] == pytest.approx([c["fitness_g"] for c in r2[-1]], abs=1e-4)


def test_wasserstein_fitness_is_the_critic_yardstick():
    co = make(["coevolution.loss=wgan-gp", "coevolution.batches_per_generation=5"])
    block = co.init_block()
    ar = torch.arange(4)
    real = co.real_batch(torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(1)))
    z = torch.randn(4, 16, 64, generator=torch.Generator().manual_seed(2))
    fit_g, fit_d = co.fitness(_weights(block.G, ar), _weights(block.D, ar), real, z)
    with torch.no_grad():
        fake = co.Gnet.apply(block.G.params, block.G.buffers, z, train=False)
        s_fake = co.Dnet.apply(block.D.params, block.D.buffers, fake, train=False)
        s_real = co.Dnet.apply(block.D.params, block.D.buffers, real, train=False)
    assert torch.allclose(fit_g[:, 0], -s_fake.mean(-1), atol=1e-6)
    assert torch.allclose(fit_d[:, 0], s_fake.mean(-1) - s_real.mean(-1), atol=1e-6)


def test_wgan_gp_run_resumes_bit_identically(tmp_path):
    # RMSprop's square average and Adam's moments live in the checkpointed NetState
    from test_checkpoint import OVER, metrics, pool_bytes
    from test_train import run_cli

    over = OVER + ["coevolution.loss=wgan-gp", "coevolution.batches_per_generation=5", "eval.every=null"]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert run_cli(a, "run", over + ["coevolution.generations=2"]) == 0
    assert run_cli(b, "run", over + ["coevolution.generations=1"]) == 0
    assert run_cli(b, "run", over + ["coevolution.generations=2"], "--resume") == 0
    assert pool_bytes(a / "run") == pool_bytes(b / "run") and pool_bytes(a / "run")
    assert metrics(a / "run") == metrics(b / "run")
    assert {c["loss_choice"] for c in metrics(a / "run")[-1]["cells"]} == {"wgan-gp"}


def test_conditional_networks_shapes_and_old_specs():
    from mustangs.pool.networks import NetSpec, build_discriminator, build_generator, pack

    classes = tuple(f"c{i}" for i in range(10))
    assert NetSpec.from_json({"arch": "mlp", "latent_dim": 8, "sample_shape": [1, 28, 28]}).classes is None
    assert "classes" not in NetSpec("mlp", 8, (1, 28, 28)).to_json()   # old pools: the same manifest
    for arch in ("mlp", "dcgan28"):
        spec = NetSpec(arch, 8, (1, 28, 28), classes)
        assert NetSpec.from_json(spec.to_json()) == spec
        g, d = build_generator(spec).eval(), build_discriminator(spec)
        z, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 9, 9, 3])
        x = g(z, y)
        assert x.shape == (6, 1, 28, 28)
        assert torch.equal(g(z), g(z, torch.tensor([0, 1, 2, 3, 4, 5])))   # no labels: balanced
        assert d(x, y).shape == (6,) and torch.allclose(d(x, y), d(pack(x, y, 10)))
        assert not torch.allclose(d(x, y), d(x, (y + 1) % 10))              # the label matters
    with pytest.raises(Exception, match="no conditional form"):
        build_generator(NetSpec("rings-mlp", 8, (2,), classes))
