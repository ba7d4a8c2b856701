"""``network.init``: the DCGAN initialisation has the published moments, ``torch`` keeps every
earlier run's numbers, draws depend on (seed, cell) alone, and a bad value is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mustangs.data.datasets import ArrayDataset
from mustangs.errors import ConfigError
from mustangs.pool.networks import NetSpec, build_discriminator, build_generator, resolve_init
from trainer.coevolution import STREAM_INIT, Coevolution, cell_seed
from trainer.config import load_train_config

pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py: small tests, one torch thread
QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def fake_images(n=64) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    return ArrayDataset("fashion-mnist", torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
                        torch.zeros(n, dtype=torch.long), 10)


def block(overrides=(), cells=None):
    cfg = load_train_config(None, ["grid.height=2", "grid.width=2", "data.batch_size=16",
                                   "coevolution.batches_per_generation=1", "mixture.enabled=false",
                                   "eval.every=null", *overrides])
    return Coevolution(cfg, fake_images(), "cpu").init_block(cells)


def kinds(module: nn.Module) -> dict[str, str]:
    """Parameter name -> 'weight' (conv/linear), 'bn' (BatchNorm weight) or 'bias'."""
    out = {}
    for prefix, m in module.named_modules():
        for name, _ in m.named_parameters(recurse=False):
            key = f"{prefix}.{name}" if prefix else name
            if name == "bias":
                out[key] = "bias"
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                out[key] = "bn"
            else:
                out[key] = "weight"
    return out


@pytest.mark.parametrize("arch", ["dcgan28", "mlp"])
def test_dcgan_init_has_the_published_moments(arch):
    b = block([f"network.arch={arch}", "network.init=dcgan"])
    spec = NetSpec(arch, 64, (1, 28, 28))
    for state, module in ((b.G, build_generator(spec)), (b.D, build_discriminator(spec))):
        seen = set()
        for name, kind in kinds(module).items():
            t = state.params[name]            # [cells, ...]
            seen.add(kind)
            if kind == "bias":
                assert torch.count_nonzero(t) == 0, name
            else:
                centre = 1.0 if kind == "bn" else 0.0
                assert abs(t.mean().item() - centre) < 0.005, (name, t.mean().item())
                assert t.std().item() == pytest.approx(0.02, rel=0.1), (name, t.std().item())
        assert "weight" in seen and "bias" in seen
        if arch == "dcgan28" and state is b.G:
            assert "bn" in seen
        for cell in range(1, len(b.cells)):   # every cell draws its own weights
            w = next(iter(state.params.values()))
            assert not torch.equal(w[0], w[cell])


@pytest.mark.parametrize("arch", ["mlp", "dcgan28"])
def test_torch_init_is_bit_identical_to_the_runs_before_the_key(arch):
    # init=torch gives what init_block built before the key existed: the default PyTorch init seeded
    # by the cell's STREAM_INIT; so does the default (auto) on an MLP.
    runs = [block([f"network.arch={arch}", "network.init=torch"])]
    if arch == "mlp":
        runs += [block(), block(["network.init=auto"])]
    spec = NetSpec(arch, 64, (1, 28, 28))
    for c in range(4):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cell_seed(0, c, STREAM_INIT))
            g, d = build_generator(spec), build_discriminator(spec)
        for state_name, ref in (("G", g), ("D", d)):
            for name, p in ref.named_parameters():
                for b in runs:
                    assert torch.equal(getattr(b, state_name).params[name][c], p.detach()), (state_name, name)


def test_torch_init_trains_bit_identically_to_the_key_absent(tmp_path):
    from mustangs.pool.format import read_pool
    from trainer.cli import main

    pools = []
    for extra in ([], ["network.init=torch"]):
        out = tmp_path / f"run{len(pools)}"
        argv = ["train", str(QUICKSTART), "--out", str(out), "--quiet", "threads=1", "grid.height=1",
                "grid.width=1", "coevolution.generations=1", "coevolution.batches_per_generation=2",
                "coevolution.tournament_size=1", "data.sampling_ratio=0.01", "mixture.enabled=false",
                "eval.every=null", "eval.fid_samples=16", "eval.diversity_samples=null", "output.report=false",
                "output.sample_every=null", "output.tensorboard=false", *extra]
        assert main(argv) == 0
        pools.append(read_pool(out / "pool").load_generator(0).state_dict())
    assert pools[0].keys() == pools[1].keys()
    assert all(torch.equal(pools[0][k], pools[1][k]) for k in pools[0])


def test_auto_is_the_default_and_means_dcgan_for_convolutional_archs_only():
    assert [resolve_init("auto", a) for a in ("dcgan28", "dcgan64", "mlp", "rings-mlp")] == \
        ["dcgan", "dcgan", "torch", "torch"]
    assert load_train_config(None).network.init == "auto"
    default = block(["network.arch=dcgan28"])
    dcgan = block(["network.arch=dcgan28", "network.init=dcgan"])
    assert all(torch.equal(default.G.params[k], dcgan.G.params[k]) for k in dcgan.G.params)
    assert all(torch.equal(default.D.params[k], dcgan.D.params[k]) for k in dcgan.D.params)


def test_resume_accepts_checkpoints_from_before_the_key_and_refuses_a_changed_init():
    from trainer.config import TrainConfig
    from trainer.configio import to_dict
    from trainer.run_folder import config_changes

    new = to_dict(load_train_config(None, ["network.arch=dcgan28"]))
    before = to_dict(TrainConfig())
    del before["network"]["init"]           # written before network.init existed (torch-initialised)
    before["network"]["arch"] = "dcgan28"
    assert config_changes(before, new) == []
    recorded = to_dict(load_train_config(None, ["network.arch=dcgan28", "network.init=torch"]))
    assert config_changes(recorded, new) == ["network.init"]


def test_dcgan_init_does_not_depend_on_the_block_layout():
    # A rank owning cells 2 and 3 draws the same weights as one process owning all four.
    whole = block(["network.arch=dcgan28", "network.init=dcgan"])
    part = block(["network.arch=dcgan28", "network.init=dcgan"], cells=[2, 3])
    for state_name in ("G", "D"):
        for k, t in getattr(whole, state_name).params.items():
            assert torch.equal(t[2:], getattr(part, state_name).params[k]), (state_name, k)
    other_seed = block(["network.arch=dcgan28", "network.init=dcgan", "seed=1"])
    assert not torch.equal(whole.G.params["fc.0.weight"], other_seed.G.params["fc.0.weight"])


def test_a_bad_init_is_refused_with_the_legal_values():
    with pytest.raises(ConfigError, match=r"network\.init.*'xavier'.*legal values: torch, dcgan, auto"):
        load_train_config(None, ["network.init=xavier"])


def test_engines_agree_under_the_dcgan_init():
    # vmap vs the per-cell loop, one generation of a 2x2 dcgan28 grid: equal but for the few weights
    # whose gradient is float noise, which Adam's first step turns into ±lr (at most 1e-5 of them).
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_batched import make

    over = ["network.arch=dcgan28", "data.batch_size=16", "coevolution.batches_per_generation=2",
            "coevolution.adversary=neighbour", "network.init=dcgan"]
    blocks = []
    for engine in ("vmap", "loop"):
        co = make(over, engine=engine)
        b = co.init_block()
        co.step(b, score=False)
        blocks.append(b)
    for state in ("G", "D"):
        for k, t in getattr(blocks[0], state).params.items():
            d = (t - getattr(blocks[1], state).params[k]).abs()
            few = k in ("fc.0.bias", "conv.0.bias") or (d > 1e-5).float().mean() <= 1e-4  # pre-BN biases: noise
            assert d.max() <= 3e-4 and few, (state, k, d.max().item())
