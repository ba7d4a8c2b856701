"""Networks, atomic writes, the pool format and the ensemble format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ensembler.ensemble import Ensemble
from mustangs.errors import UserError
from mustangs.io.atomic import atomic_dir, write_text_atomic
from mustangs.pool.format import read_pool, save_generator_file, write_pool
from mustangs.pool.networks import ARCHS, ARCH_SHAPES, NetSpec, build_discriminator, build_generator


@pytest.mark.parametrize("arch", ARCHS)
def test_networks_shapes(arch):
    spec = NetSpec(arch, 16, ARCH_SHAPES[arch])
    g, d = build_generator(spec).eval(), build_discriminator(spec).eval()
    x = g(torch.randn(3, 16))
    assert x.shape == (3, *ARCH_SHAPES[arch])
    p = d(x)
    assert p.shape == (3,) and ((p >= 0) & (p <= 1)).all()


def test_reference_mlp_layout():
    g = build_generator(NetSpec("mlp", 64, (1, 28, 28)))
    shapes = {k: tuple(v.shape) for k, v in g.state_dict().items()}
    assert shapes == {"net.0.weight": (256, 64), "net.0.bias": (256,), "net.2.weight": (256, 256),
                      "net.2.bias": (256,), "net.4.weight": (784, 256), "net.4.bias": (784,)}


def test_spec_refuses_wrong_shapes():
    with pytest.raises(UserError, match="makes samples of shape"):
        build_generator(NetSpec("mlp", 64, (3, 64, 64)))
    with pytest.raises(UserError, match="unknown network arch"):
        NetSpec.from_json({"arch": "resnet", "latent_dim": 1, "sample_shape": [2]})


def test_atomic_writes_leave_old_content_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("half")
            raise RuntimeError("crash")
    assert not (tmp_path / "d").exists() and target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def _pool(tmp_path, n=3, spec=NetSpec("mlp", 8, (1, 28, 28))):
    torch.manual_seed(0)
    return write_pool(tmp_path / "pool", spec, "fashion-mnist",
                      [(f"g{i}", build_generator(spec), {"origin": {"cell": [0, i]}}) for i in range(n)])


def test_pool_round_trip_and_corruption(tmp_path):
    pool = _pool(tmp_path)
    assert len(read_pool(tmp_path / "pool")) == 3 and pool.entries[1].origin == {"cell": [0, 1]}
    g = pool.load_generator(0)
    assert g(torch.zeros(1, 8)).shape == (1, 1, 28, 28)
    # A generator file changed behind the manifest's back is refused.
    f = pool.path(pool.entries[2])
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(UserError, match="does not match the hash"):
        pool.load_generator(2)
    with pytest.raises(UserError, match="not a pool folder"):
        read_pool(tmp_path / "nothing")


def test_nan_weights_are_refused(tmp_path):
    pool = _pool(tmp_path, 1)
    g = pool.load_generator(0)
    with torch.no_grad():
        g.net[0].weight[0, 0] = float("nan")
    save_generator_file(tmp_path / "nan.safetensors", g)
    from mustangs.pool.format import load_generator_file

    with pytest.raises(UserError, match="NaN"):
        load_generator_file(tmp_path / "nan.safetensors", pool.spec)


def test_ensemble_round_trip_and_sampling(tmp_path):
    pool = _pool(tmp_path)
    ens = Ensemble.from_pool(pool, [0.2, 0.0, 0.8])
    assert len(ens.generators) == 2 and np.allclose(ens.weights, [0.2, 0.8])
    ens.save(tmp_path / "e.json")
    assert json.loads((tmp_path / "e.json").read_text())["members"][0]["path"].startswith("pool/")
    again = Ensemble.load(tmp_path / "e.json")
    a, b = ens.sample(50, generator=7), again.sample(50, generator=7)
    assert torch.equal(a, b) and a.shape == (50, 1, 28, 28)
    # Rows of component k come from generator k.
    z, k = ens.draw(20, torch.Generator().manual_seed(1))
    out = ens.generate(z, k)
    j = int(k[0])
    assert torch.allclose(out[0], ens.generators[j](z[:1])[0], atol=1e-5)
    assert len(ens.sample(4, output="pil")) == 4


def test_ensemble_file_errors(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        Ensemble.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(UserError, match="not a Mustangs ensemble"):
        Ensemble.load(tmp_path / "y.json")
