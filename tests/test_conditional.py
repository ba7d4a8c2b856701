"""Class-conditional grids (``network.conditional``, issue 21): training with labels, the pool,
the ONNX graph with a ``labels`` input, ``POST /sample`` with labels and ``cond_acc_cls10k``."""

from __future__ import annotations

import json

import pytest
import torch

from mustangs.data.datasets import ArrayDataset
from mustangs.errors import ConfigError
from trainer.coevolution import Coevolution
from trainer.config import load_train_config

from conftest import needs_fashion


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py: small tests, one torch thread


def labelled_images(n=300, seed=0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    return ArrayDataset("fashion-mnist", torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
                        torch.randint(0, 10, (n,), generator=g), 10)


def make(overrides=(), engine=None, data=None) -> Coevolution:
    cfg = load_train_config(None, ["grid.height=2", "grid.width=2", "data.batch_size=16", "network.conditional=true",
                                   "coevolution.batches_per_generation=2", *overrides])
    return Coevolution(cfg, data or labelled_images(), "cpu", engine=engine)


@pytest.mark.parametrize("over,words", [
    (["data.dataset=rings", "network.arch=rings-mlp"], "has no class labels"),
    (["coevolution.loss=wgan-gp"], "coevolution.loss=wgan"),
])
def test_conditional_refuses_what_it_cannot_train(over, words):
    with pytest.raises(ConfigError, match=words) as exc:
        load_train_config(None, ["network.conditional=true", *over])
    assert "\n" not in str(exc.value) and "network.conditional=false" in str(exc.value)


def test_real_batches_carry_their_labels_and_fakes_the_drawn_ones():
    data = labelled_images()
    co = make(data=data)
    idx = torch.tensor([[0, 5, 7], [1, 2, 3]])
    x = co.real_batch(idx)
    assert x.shape == (2, 3, 784 + 10)
    assert torch.equal(x[..., 784:].argmax(-1), data.labels[idx])
    assert torch.allclose(x[..., :784], data.batch(idx.reshape(-1)).view(2, 3, 784))
    z = co.latents([torch.Generator().manual_seed(s) for s in range(4)], 500)
    assert z.shape == (4, 500, 64 + 10) and torch.all(z[..., 64:].sum(-1) == 1)
    counts = torch.bincount(z[..., 64:].argmax(-1).reshape(-1), minlength=10)
    assert counts.min() > 150   # uniform labels: ~200 of each
    fake = co.Gnet.apply(*_params(co), z, train=False)
    packed = co.d_input(fake, z)
    assert torch.equal(packed[..., 784:], z[..., 64:])


def _params(co):
    b = co.init_block()
    return b.G.params, b.G.buffers


@pytest.mark.parametrize("engine", ["bmm", "vmap"])
def test_conditional_mlp_generation_batched_equals_loop(engine):
    blocks = []
    for eng in (engine, "loop"):
        co = make(["coevolution.adversary=neighbour"], engine=eng)
        b = co.init_block()
        co.step(b, score=False)
        blocks.append(b)
    b1, b2 = blocks
    for part in ("G", "D"):
        for k, t in getattr(b1, part).params.items():
            assert torch.allclose(t, getattr(b2, part).params[k], atol=1e-5), (part, k)


def test_conditional_dcgan28_vmap_equals_loop_per_step():
    # Over a whole generation the two differ by 2*lr in a few weights: the one-hot columns before
    # BatchNorm sum to a constant (a bias direction with zero true gradient) and Adam's first
    # steps turn the float noise there into +-lr; so the engines are compared on one step's
    # outputs and gradients, from the same weights and inputs. Conv gradients summed in another
    # order differ by up to ~0.5% of their largest entry under vmap, conditional or not.
    outs = []
    for eng in ("vmap", "loop"):
        co = make(["network.arch=dcgan28"], engine=eng)
        b = co.init_block()
        z = co.latents([torch.Generator().manual_seed(s) for s in range(4)], 16)
        gp = {k: t.detach().requires_grad_(True) for k, t in b.G.params.items()}
        dp = {k: t.detach().requires_grad_(True) for k, t in b.D.params.items()}
        real = co.real_batch(torch.arange(64).view(4, 16))
        fake = co.d_input(co.Gnet.apply(gp, {k: v.clone() for k, v in b.G.buffers.items()}, z, train=True), z)
        p = co.Dnet.apply(dp, b.D.buffers, torch.cat([real, fake], 1), train=True)
        grads = torch.autograd.grad(p.log().sum(), [*gp.values(), *dp.values()])
        outs.append((p.detach(), grads))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-6)
    for a, b in zip(outs[0][1], outs[1][1]):
        assert (a - b).abs().max() <= 1e-2 * a.abs().max() + 1e-5   # + pre-BatchNorm biases: zero true gradient


def test_conditional_critic_trains_with_weight_clipping():
    co = make(["coevolution.loss=wgan", "coevolution.batches_per_generation=5", "coevolution.selection=false"])
    b = co.init_block()
    recs = co.step(b, score=False)
    assert all(r["loss_choice"] == "wgan" for r in recs)
    assert max(float(t.abs().max()) for t in b.D.params.values()) <= 0.01 + 1e-7


def test_unconditional_latents_are_what_they_were():
    cfg = load_train_config(None, ["grid.height=2", "grid.width=2", "data.batch_size=16"])
    co = Coevolution(cfg, labelled_images(), "cpu")
    assert co.K == 0 and co.spec.classes is None and co.d_shape == (1, 28, 28)
    z = co.latents([torch.Generator().manual_seed(3)], 5)
    assert torch.equal(z[0], torch.randn(5, 64, generator=torch.Generator().manual_seed(3)))
    assert co.with_balanced_labels(z) is z


class _ReadsTheLabel(torch.nn.Module):
    """A stand-in judge: class = round(10 * mean pixel)."""

    num_classes, feature_dim = 10, 1

    def features_and_logits(self, x):
        v = x.reshape(x.shape[0], -1).mean(1, keepdim=True)
        return v, -(10 * v - torch.arange(10.0)) ** 2


def test_cond_acc_counts_samples_the_judge_puts_in_their_class():
    from mustangs.judge.conditional import cond_acc_key, conditional_accuracy

    judge = _ReadsTheLabel()
    obeys = lambda y: (y.float() / 10).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)   # noqa: E731
    ignores = lambda y: torch.full((len(y), 1, 4, 4), 0.3)                     # noqa: E731
    assert conditional_accuracy(judge, obeys, 1000, 10, batch_size=64) == 1.0
    assert conditional_accuracy(judge, ignores, 1000, 10, batch_size=64) == pytest.approx(0.1)   # class 3 only
    assert cond_acc_key(10_000) == "cond_acc_cls10k"
    with pytest.raises(Exception, match="judge has 10 classes"):
        conditional_accuracy(judge, obeys, 10, 8)


@needs_fashion
def test_tiny_conditional_fashion_run_writes_a_loadable_conditional_pool(tmp_path, capsys):
    from mustangs.pool.format import read_pool
    from trainer.cli import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("# test config\n")
    over = ["threads=1", "network.conditional=true", "grid.height=2", "grid.width=2", "data.sampling_ratio=0.01",
            "data.batch_size=50", "coevolution.batches_per_generation=3", "coevolution.generations=2",
            "mixture.eval_samples=100", "eval.fid_samples=100", "eval.diversity_samples=null",
            "output.report=false", "output.tensorboard=false"]
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--quiet", *over]) == 0
    pool = read_pool(tmp_path / "run" / "pool")
    assert pool.spec.classes[:2] == ("T-shirt/top", "Trouser") and len(pool.spec.classes) == 10
    g = pool.load_generator(0)
    y = torch.tensor([1, 7, 9])
    x = g(torch.randn(3, 64), y)
    assert x.shape == (3, 1, 28, 28) and x.abs().max() <= 1
    # ensembler evaluate reports cond_acc for a conditional pool; ensembler sample draws given labels
    from ensembler.cli import main as ensembler

    capsys.readouterr()
    assert ensembler(["evaluate", str(tmp_path / "run" / "pool"), "-n", "100", "--json",
                      "--diversity-samples", "0", "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("{"):])["rows"]
    assert [r["name"] for r in rows][-1] == "uniform" and all(0 <= r["cond_acc_cls100"] <= 1 for r in rows)
    from ensembler.ensemble import Ensemble, parse_labels

    ens = Ensemble.from_pool(pool, meta={"pools": [str(tmp_path / "run" / "pool")]})
    ens.save(tmp_path / "e.json")
    assert ensembler(["sample", str(tmp_path / "e.json"), "-n", "6", "--labels", "Bag,0",
                      "--out", str(tmp_path / "bags.png")]) == 0
    assert (tmp_path / "bags.png").stat().st_size > 100
    assert parse_labels("Bag,0", pool.spec.classes, 5) == [8, 0, 8, 0, 8]
    assert ensembler(["sample", str(tmp_path / "e.json"), "--labels", "Shoe", "--out", str(tmp_path / "x.png")]) == 2
    assert "unknown class 'Shoe'; classes are 'T-shirt/top'" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the ONNX graph
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def conditional_ensemble(folder, arch: str = "mlp", weights=(0.5, 0.3, 0.2), classes=CLASSES):
    """A pool of randomly initialised conditional generators (``classes=None``: unconditional ones)
    and an ensemble.json over it."""
    from ensembler.ensemble import Ensemble
    from mustangs.pool.format import write_pool
    from mustangs.pool.networks import NetSpec, build_generator

    spec = NetSpec(arch, 16, (1, 28, 28), classes)
    torch.manual_seed(0)
    gens = []
    for i in range(len(weights)):
        g = build_generator(spec)
        for m in g.modules():   # non-trivial BatchNorm statistics, so eval mode really matters
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
        gens.append((f"{arch}-c{i}", g, {"origin": {"cell": [0, i]}}))
    pool = write_pool(folder / "pool", spec, "fashion-mnist", gens)
    ens = Ensemble.from_pool(pool, list(weights), meta={"method": "pool"})
    ens.save(folder / "ensemble.json")
    return folder / "ensemble.json"


@pytest.fixture(scope="module", params=["mlp", "dcgan28"])
def cond_model(request, tmp_path_factory):
    """(ensemble.json, model.onnx) of a conditional ensemble, exported with the parity check."""
    from serving.export import export_ensemble

    folder = tmp_path_factory.mktemp(f"cond-{request.param}")
    ens = conditional_ensemble(folder, request.param)
    res = export_ensemble(ens, folder / "m.onnx", check_parity=True)
    assert res.max_abs_diff <= 1e-4
    return ens, folder / "m.onnx"


@pytest.mark.parametrize("n", [1, 7, 300])
def test_conditional_graph_takes_labels_and_matches_torch(cond_model, n):
    import numpy as np
    import onnx
    import onnxruntime as ort

    from ensembler.ensemble import Ensemble
    from serving.export import META_KEYS

    ens_path, path = cond_model
    ens = Ensemble.load(ens_path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in sess.get_inputs()] == [
        ("z", "tensor(float)"), ("k", "tensor(int64)"), ("labels", "tensor(int64)")]
    g = torch.Generator().manual_seed(n)
    z = torch.randn(n, 16, generator=g)
    k = torch.tensor([2]) if n == 1 else torch.tensor([0, 2])[torch.randint(0, 2, (n,), generator=g)]  # 1: no rows
    y = torch.randint(0, 10, (n,), generator=g)
    want = ens.generate(z, k, y).numpy()
    got = sess.run(["samples"], {"z": z.numpy(), "k": k.numpy(), "labels": y.numpy()})[0]
    assert np.abs(got - want).max() <= 1e-4
    if n == 300:   # the labels matter: other labels, other samples
        other = sess.run(["samples"], {"z": z.numpy(), "k": k.numpy(), "labels": ((y + 1) % 10).numpy()})[0]
        assert np.abs(other - got).max() > 1e-2
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta[META_KEYS["classes"]]) == list(CLASSES)


def test_unconditional_metadata_has_no_classes(tmp_path):
    from serving.export import ensemble_metadata
    from ensembler.ensemble import Ensemble
    from mustangs.pool.networks import NetSpec, build_generator

    spec = NetSpec("mlp", 16, (1, 28, 28))
    meta = ensemble_metadata(Ensemble(spec, [build_generator(spec)], [1.0]), "0" * 64)
    assert "mustangs.classes" not in meta
    with pytest.raises(Exception, match="not conditional"):
        Ensemble(spec, [build_generator(spec)], [1.0]).sample(2, 0, labels=[0, 1])
