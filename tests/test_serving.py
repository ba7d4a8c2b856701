"""serving: ONNX export of an ensemble (parity, metadata, refusals), OnnxSampler, the CLI.

Ensembles here are built from randomly initialised generators (no training needed); each
architecture is exported once per module.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from ensembler.ensemble import Ensemble
from mustangs.errors import UserError
from mustangs.io.images import grid_image, scatter_image
from mustangs.pool.format import sha256_file, write_pool
from mustangs.pool.networks import NetSpec, build_generator
from serving.cli import main
from serving.export import INPUT_K, INPUT_Z, META_KEYS, OUTPUT, ONNX_FORMAT, export_ensemble
from serving.sampler import OnnxSampler, grid_uint8, pick_providers, scatter_uint8

WEIGHTS = [0.4, 0.3, 0.2, 0.1]


def make_ensemble(folder: Path, arch: str = "mlp", weights=WEIGHTS, seed: int = 0) -> Path:
    """Write a pool of randomly initialised generators and an ensemble.json over it; returns the JSON path."""
    spec = NetSpec(arch, 16, (1, 28, 28))
    torch.manual_seed(seed)
    gens = []
    for i in range(len(weights)):
        g = build_generator(spec)
        for m in g.modules():  # non-trivial BatchNorm statistics, so eval mode really matters
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
        gens.append((f"{arch}-g{i}", g, {"origin": {"cell": [0, i]}}))
    pool = write_pool(folder / "pool", spec, "fashion-mnist", gens)
    ens = Ensemble.from_pool(pool, weights, meta={"method": "cma", "objective": "tvd", "pools": [str(folder)],
                                                  "history": [[1, 0.5]], "metrics": {"estimated": {"tvd_cls10k": 0.1}}})
    ens.save(folder / "ensemble.json")
    return folder / "ensemble.json"


@pytest.fixture(scope="module", params=["mlp", "dcgan28"])
def exported(request, tmp_path_factory):
    """(ensemble.json, model.onnx, CLI stdout): exported once per architecture through the CLI."""
    folder = tmp_path_factory.mktemp(f"serving-{request.param}")
    ens_path = make_ensemble(folder, request.param)
    out = folder / "ensemble.onnx"
    buf = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(buf):
        assert main(["export", str(ens_path), "--out", str(out), "--threads", "1"]) == 0
    return ens_path, out, buf.getvalue()


@pytest.fixture(scope="module")
def mlp_model(tmp_path_factory):
    """A small exported mlp ensemble for sampler and CLI tests (python API, no parity check)."""
    folder = tmp_path_factory.mktemp("serving-sampler")
    ens_path = make_ensemble(folder, "mlp", weights=[0.7, 0.0, 0.3])  # the zero weight is dropped
    export_ensemble(ens_path, folder / "m.onnx")
    return folder / "m.onnx"


# ------------------------------------------------------------------------------------------- export
def _ort(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_parity_torch_vs_onnxruntime(exported, n):
    """Max abs diff ≤ 1e-4 on the same (z, k), with components that get no rows at all."""
    ens_path, onnx_path, _ = exported
    ens = Ensemble.load(ens_path)
    gen = torch.Generator().manual_seed(n)
    z = torch.randn(n, ens.latent_dim, generator=gen)
    # Component 2 never appears; for n = 1 only component 3 runs.
    k = torch.tensor([3]) if n == 1 else torch.tensor([0, 1, 3])[torch.randint(0, 3, (n,), generator=gen)]
    if n >= 7:
        k[:3] = torch.tensor([0, 1, 3])
    want = ens.generate(z, k).numpy()
    got = _ort(onnx_path).run([OUTPUT], {INPUT_Z: z.numpy(), INPUT_K: k.numpy()})[0]
    assert got.shape == (n, 1, 28, 28) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-4


def test_cli_export_prints_parity(exported):
    _, _, stdout = exported
    assert "wrote" in stdout and "max abs diff" in stdout


def test_graph_is_one_checked_file_with_metadata(exported):
    ens_path, onnx_path, _ = exported
    assert [p.name for p in onnx_path.parent.iterdir() if p.name.startswith("ensemble.onnx")] == ["ensemble.onnx"]
    model = onnx.load(str(onnx_path))  # no external data needed
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta[META_KEYS["format"]] == ONNX_FORMAT
    assert json.loads(meta[META_KEYS["weights"]]) == pytest.approx(WEIGHTS)
    assert int(meta[META_KEYS["latent_dim"]]) == 16
    assert json.loads(meta[META_KEYS["sample_shape"]]) == [1, 28, 28]
    arch = json.loads(ens_path.read_text())["network"]["arch"]
    assert meta[META_KEYS["arch"]] == arch
    assert json.loads(meta[META_KEYS["generator_ids"]]) == [f"{arch}-g{i}" for i in range(4)]
    assert meta[META_KEYS["ensemble_sha256"]] == sha256_file(ens_path)
    summary = json.loads(meta[META_KEYS["ensemble_meta"]])
    assert summary["objective"] == "tvd" and summary["metrics"]["estimated"]["tvd_cls10k"] == 0.1
    assert "pools" not in summary and "history" not in summary  # no local paths, no search trace
    # Inputs z [N, zdim] float32 and k [N] int64 with one dynamic batch axis; output [N, 1, 28, 28].
    z, k = model.graph.input
    assert (z.name, k.name) == (INPUT_Z, INPUT_K)
    assert z.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert k.type.tensor_type.elem_type == onnx.TensorProto.INT64
    batch = z.type.tensor_type.shape.dim[0].dim_param
    assert batch and k.type.tensor_type.shape.dim[0].dim_param == batch
    assert z.type.tensor_type.shape.dim[1].dim_value == 16
    out = model.graph.output[0].type.tensor_type.shape.dim
    assert out[0].dim_param == batch and [d.dim_value for d in out[1:]] == [1, 28, 28]
    # Each generator runs on its own rows: one NonZero per component.
    assert sum(node.op_type == "NonZero" for node in model.graph.node) == 4


def test_rows_with_unknown_component_are_zero(exported):
    _, onnx_path, _ = exported
    z = np.random.default_rng(0).standard_normal((3, 16), dtype=np.float32)
    got = _ort(onnx_path).run(None, {INPUT_Z: z, INPUT_K: np.array([0, 9, -1], np.int64)})[0]
    assert np.all(got[1:] == 0) and np.any(got[0] != 0)


def _refused(capsys, argv, out: Path, match: str):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and match in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]  # no temp left


def test_export_refuses_bad_ensembles(tmp_path, capsys):
    out = tmp_path / "out" / "e.onnx"
    out.parent.mkdir()
    _refused(capsys, ["export", str(tmp_path / "missing.json"), "--out", str(out)], out, "cannot read")
    (tmp_path / "bad.json").write_text("{not json")
    _refused(capsys, ["export", str(tmp_path / "bad.json"), "--out", str(out)], out, "not valid JSON")
    (tmp_path / "pool.json").write_text(json.dumps({"format": "mustangs-pool/1", "generators": []}))
    _refused(capsys, ["export", str(tmp_path / "pool.json"), "--out", str(out)], out, "not a Mustangs ensemble")
    ens = make_ensemble(tmp_path / "e", "mlp", weights=[0.5, 0.5])
    weights_file = next((tmp_path / "e" / "pool").glob("*.safetensors"))
    weights_file.write_bytes(weights_file.read_bytes()[:-8] + b"\0" * 8)
    _refused(capsys, ["export", str(ens), "--out", str(out)], out, "does not match the hash")


def test_export_failure_keeps_the_old_file(tmp_path, monkeypatch, mlp_model):
    import serving.export as ex

    ens = make_ensemble(tmp_path, "mlp", weights=[1.0])
    out = tmp_path / "e.onnx"
    out.write_bytes(b"old")
    monkeypatch.setattr(ex, "build_graph_model", lambda *a, **k: onnx.load(str(mlp_model)))  # skip tracing
    monkeypatch.setattr(ex, "max_abs_diff", lambda *a, **k: 1.0)
    with pytest.raises(UserError, match="parity check failed"):
        export_ensemble(ens, out, check_parity=True)
    assert out.read_bytes() == b"old"
    with pytest.raises(UserError, match="is a folder"):
        export_ensemble(ens, tmp_path)


# ------------------------------------------------------------------------------------------- sampler
def test_sampler_reads_metadata_and_is_deterministic(mlp_model):
    s = OnnxSampler(mlp_model, threads=1)
    assert s.latent_dim == 16 and s.sample_shape == (1, 28, 28)
    assert s.weights.tolist() == pytest.approx([0.7, 0.3]) and s.generator_ids == ["mlp-g0", "mlp-g2"]
    assert s.active_providers == ["CPUExecutionProvider"]
    a, b = s.sample(5, seed=3), s.sample(5, seed=3)
    assert a.shape == (5, 1, 28, 28) and a.dtype == np.float32 and np.array_equal(a, b)
    assert np.all(np.abs(a) <= 1)
    assert not np.array_equal(s.sample(5), s.sample(5))  # no seed: fresh entropy
    assert s.sample(0).shape == (0, 1, 28, 28)
    info = s.info()
    assert info["weights"] == pytest.approx([0.7, 0.3]) and len(info["model_sha256"]) == 64


def test_sampler_matches_torch_ensemble(mlp_model):
    """The same (z, k) through OnnxSampler.run and the torch ensemble agree; batching changes nothing."""
    ens = Ensemble.load(mlp_model.parent / "ensemble.json")
    s = OnnxSampler(mlp_model, threads=1, batch_size=7)
    z, k = s.draw(50, np.random.default_rng(0))
    want = ens.generate(torch.from_numpy(z), torch.from_numpy(k)).numpy()
    assert np.abs(s.run(z, k) - want).max() <= 1e-4


def test_sampler_draws_components_by_weight(mlp_model):
    s = OnnxSampler(mlp_model, threads=1)
    _, k = s.draw(20000, np.random.default_rng(0))
    assert k.dtype == np.int64 and set(np.unique(k)) == {0, 1}
    assert abs(np.mean(k == 0) - 0.7) < 0.02


def test_sampler_png_and_npy(mlp_model):
    s = OnnxSampler(mlp_model, threads=1)
    png = s.sample_png(16, seed=1)
    assert png == s.sample_png(16, seed=1)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (4 * 58 + 2, 4 * 58 + 2)   # 28x28 samples at 2x, 2 px gaps
    arr = np.load(io.BytesIO(s.sample_npy(6, seed=2)), allow_pickle=False)
    assert np.array_equal(arr, s.sample(6, seed=2))
    with pytest.raises(UserError):
        s.sample_png(0)


def test_numpy_grid_equals_trainer_grid():
    x = torch.rand(7, 1, 28, 28) * 2.4 - 1.2
    assert np.array_equal(grid_uint8(x.numpy())[..., 0], np.asarray(grid_image(x)))
    x3 = torch.rand(5, 3, 8, 8) * 2 - 1
    assert np.array_equal(grid_uint8(x3.numpy(), nrow=2), np.asarray(grid_image(x3, nrow=2)))
    p = torch.randn(300, 2)
    assert np.array_equal(scatter_uint8(p.numpy()), np.asarray(scatter_image(p)))


def test_small_samples_are_drawn_at_twice_their_size():
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    big, plain = grid_uint8(x.numpy(), nrow=2), grid_uint8(x.numpy(), nrow=2, scale=1)
    assert big.shape == (2 * 58 + 2, 2 * 58 + 2, 1) and plain.shape == (2 * 30 + 2, 2 * 30 + 2, 1)
    assert np.array_equal(big[2:58:2, 2:58:2], plain[2:30, 2:30])   # every sample pixel, repeated 2x2
    assert grid_uint8(np.zeros((1, 3, 64, 64), np.float32)).shape == (68, 68, 3)   # 64x64 stays 1x


def test_pick_providers_names_them_explicitly():
    cpu, cuda = "CPUExecutionProvider", "CUDAExecutionProvider"
    assert pick_providers([cpu]) == [cpu]
    assert pick_providers([cuda, cpu], gpu_present=False) == [cpu]  # onnxruntime-gpu on a CPU host
    assert pick_providers([cuda, cpu], gpu_present=True) == [cuda, cpu]
    assert pick_providers() in ([cpu], [cuda, cpu])


def test_sampler_refuses_foreign_files(tmp_path, mlp_model):
    with pytest.raises(UserError, match="does not exist"):
        OnnxSampler(tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a loadable ONNX model"):
        OnnxSampler(tmp_path / "junk.onnx")
    model = onnx.load(str(mlp_model))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "plain.onnx"))
    with pytest.raises(UserError, match="not a Mustangs ensemble model"):
        OnnxSampler(tmp_path / "plain.onnx")


# ------------------------------------------------------------------------------------------- CLI
def test_cli_sample_and_info(mlp_model, tmp_path, capsys):
    assert main(["sample", str(mlp_model), "-n", "9", "--seed", "1", "--out", str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").size == (3 * 58 + 2, 3 * 58 + 2)
    assert main(["sample", str(mlp_model), "-n", "4", "--seed", "1", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy", allow_pickle=False).shape == (4, 1, 28, 28)
    capsys.readouterr()
    assert main(["info", str(mlp_model)]) == 0
    assert json.loads(capsys.readouterr().out)["generator_ids"] == ["mlp-g0", "mlp-g2"]
    assert main(["sample", str(tmp_path / "none.onnx"), "--out", str(tmp_path / "x.png")]) == 2
    assert main(["serve", str(tmp_path / "none.onnx")]) == 2  # checked before bentoml starts
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------------------------------- judged export
def test_export_with_a_classifier_scores_the_served_model_and_names_the_judge(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MUSTANGS_CACHE", str(tmp_path / "cache"))
    ens = make_ensemble(tmp_path / "e", "mlp", weights=[0.5, 0.5])
    out = tmp_path / "judged.onnx"
    # a classifier trained for another dataset: refused in one line before anything is written
    _refused(capsys, ["export", str(ens), "--out", str(out), "--classifier", "rings"], out, "'rings'")
    assert main(["export", str(ens), "--out", str(out), "--threads", "1", "--no-check", "--classifier",
                 "fashion-mnist", "--score-samples", "300"]) == 0
    printed = capsys.readouterr().out
    assert "judged by classifier fashion-mnist" in printed
    info = OnnxSampler(out).info()
    verdict = info["served_scores"]
    assert verdict["classifier"]["name"] == "fashion-mnist" and verdict["classifier"]["forced"] is False
    assert len(verdict["classifier"]["sha256"]) == 64 and verdict["samples"] == 300
    assert {"tvd_cls300", "is_cls300"} <= set(verdict["metrics"])
    # the model is still a complete, loadable Mustangs model after its metadata was rewritten
    assert OnnxSampler(out).sample(4, seed=0).shape == (4, 1, 28, 28)
