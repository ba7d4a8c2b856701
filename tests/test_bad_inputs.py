"""Hostile but fair inputs, one test per kind of issue 11: every refusal is exit code 2, one line
starting with ``error:``, no traceback, and leaves every file under the test folder as it was
(sha256 of each file before and after; nothing new, nothing removed).

Kinds: output onto input · dead-end run folders (see also test_kill_resume.py) · file-system
errors · size limits · paths escaping their folder · malformed files and flags · silently wrong
values · the smaller ones (opset, Bento bind address, umask).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ensembler.cli import main as ensembler_main
from ensembler.ensemble import Ensemble
from mustangs.pool.format import write_pool
from mustangs.pool.networks import NetSpec, build_generator
from serving.cli import main as serving_main
from trainer.cli import main as trainer_main

ROOT = Path(__file__).resolve().parents[1]
SPEC = NetSpec("mlp", 8, (1, 28, 28))
RINGS = ["threads=1", "data.dataset=rings", "network.arch=rings-mlp", "network.latent_dim=8", "grid.height=2",
         "grid.width=2", "data.sampling_ratio=0.02", "data.batch_size=50", "coevolution.batches_per_generation=2",
         "coevolution.generations=1", "mixture.eval_samples=100", "eval.fid_samples=100", "output.report=false"]


# --------------------------------------------------------------------------- harness

def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (and the names of empty folders)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir() and not any(p.iterdir()):
            out[rel] = "<empty dir>"
    return out


def call(main, argv) -> tuple[int, str, str]:
    """Run a CLI entry point in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse refusals
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def refused(root: Path, main, argv, *words: str) -> str:
    """Assert ``main(argv)`` is refused cleanly and changes nothing under ``root``; returns the line."""
    before = snapshot(root)
    code, _out, err = call(main, argv)
    line = err.strip()
    assert code == 2, f"exit {code}: {err[-800:]}"
    assert len(line.splitlines()) == 1 and line.startswith("error:"), err
    assert "Traceback" not in err
    for w in words:
        assert w in line, line
    assert snapshot(root) == before, "files changed"
    return line


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSTANGS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MUSTANGS_OFFLINE", "1")


def make_pool(folder: Path, n: int = 3) -> Path:
    torch.manual_seed(0)
    write_pool(folder, SPEC, "fashion-mnist", [(f"g{i}", build_generator(SPEC), {"origin": {"cell": [0, i]}})
                                               for i in range(n)])
    return folder


def make_ensemble(folder: Path, weights=(0.5, 0.3, 0.2)) -> tuple[Path, Path]:
    from mustangs.pool.format import read_pool

    pool = make_pool(folder / "pool", len(weights))
    Ensemble.from_pool(read_pool(pool), list(weights)).save(folder / "e.json")
    return pool, folder / "e.json"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """An exported 3-generator ONNX model (once per module)."""
    folder = tmp_path_factory.mktemp("model")
    _, ens = make_ensemble(folder)
    code, _, err = call(serving_main, ["export", ens, "--out", folder / "m.onnx", "--no-check", "--threads", "1"])
    assert code == 0, err
    return folder / "m.onnx"


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- 1. output onto input

def test_outputs_never_land_on_inputs(tmp_path, model):
    pool, ens = make_ensemble(tmp_path)
    import shutil

    m = tmp_path / "m.onnx"
    shutil.copyfile(model, m)
    refused(tmp_path, ensembler_main, ["optimize", pool, "--out", pool / "manifest.json"], "input pool")
    refused(tmp_path, ensembler_main, ["optimize", pool, "--out", pool / "e.json"], "lies inside the input pool")
    refused(tmp_path, ensembler_main, ["optimize", pool, "--out", pool / "g0.safetensors"], "input pool")
    refused(tmp_path, ensembler_main, ["optimize", pool, "--out", tmp_path / "x.json", "--plot", pool / "c.png"],
            "--plot")
    refused(tmp_path, ensembler_main, ["sample", ens, "--out", ens], "is the input ensemble")
    refused(tmp_path, ensembler_main, ["sample", ens, "--out", pool / "g1.safetensors"], "input")
    refused(tmp_path, serving_main, ["export", ens, "--out", ens], "is the input ensemble")
    refused(tmp_path, serving_main, ["export", ens, "--out", pool / "m.onnx"], "lies inside the input pool")
    refused(tmp_path, serving_main, ["sample", m, "--out", m], "is the input model")
    refused(tmp_path, serving_main, ["export", pool, "--out", pool / "m.onnx"], "lies inside the input pool")
    refused(tmp_path, serving_main, ["export", pool, "--out", pool], "is the input pool")
    refused(tmp_path, ensembler_main, ["front", pool, "--out", pool / "f.json"], "lies inside the input pool")
    refused(tmp_path, ensembler_main, ["front", pool, "--out", tmp_path / "f.json", "--plot", pool / "f.png"],
            "--plot")
    refused(tmp_path, ensembler_main, ["front", pool, "--out", tmp_path / "f.json", "--cache-dir", pool],
            "--cache-dir")
    # trainer: the run folder may not hold the config
    cfg = write_config(tmp_path / "cfg.yaml", "seed: 1\n")
    refused(tmp_path, trainer_main, ["train", cfg, "--out", tmp_path, *RINGS], "contains the input config")


def test_force_replaces_only_what_the_tool_wrote(tmp_path):
    lip = tmp_path / "lip"
    lip.mkdir()
    torch.manual_seed(0)
    state = {k.removeprefix("net."): v for k, v in build_generator(NetSpec("mlp", 64, (1, 28, 28))).state_dict().items()}
    torch.save(state, lip / "generator-0.pkl")
    (tmp_path / "notes.txt").write_text("precious")
    refused(tmp_path, ensembler_main, ["import-lipizzaner", lip, "--out", lip, "--force"], "is the input folder")
    refused(tmp_path, ensembler_main, ["import-lipizzaner", lip, "--out", tmp_path, "--force"], "contains the input")
    refused(tmp_path, ensembler_main, ["import-lipizzaner", lip, "--out", lip / "pool", "--force"], "lies inside")
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("1,2\n")
    refused(tmp_path, ensembler_main, ["import-lipizzaner", lip, "--out", other, "--force"], "not one")
    # Our own pool plus a foreign file: --force would delete the file, so it is refused.
    code, _, err = call(ensembler_main, ["import-lipizzaner", lip, "--out", tmp_path / "pool"])
    assert code == 0, err
    (tmp_path / "pool" / "README").write_text("mine")
    refused(tmp_path, ensembler_main, ["import-lipizzaner", lip, "--out", tmp_path / "pool", "--force"], "README")
    (tmp_path / "pool" / "README").unlink()
    code, _, err = call(ensembler_main, ["import-lipizzaner", lip, "--out", tmp_path / "pool", "--force"])
    assert code == 0, err  # our own pool is replaced


# --------------------------------------------------------------------------- 2. dead-end run folders

def test_dead_end_run_folder_restarts_and_foreign_files_are_kept(tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", "# test\n")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "metrics.jsonl").write_text('{"generation": 1}\n')
    (run / "checkpoints" / ".gen-000001.safetensors.abcd1234.tmp").write_bytes(b"half")
    (run / "checkpoints" / "gen-000001.safetensors").write_bytes(b"orphan")
    (run / ".config.yaml.zz9_ab12.tmp").write_text("half")
    # a foreign file: refused, and nothing (not even the temp files) is touched
    (run / "thesis.tex").write_text("do not delete")
    refused(tmp_path, trainer_main, ["train", cfg, "--out", run, "--quiet", *RINGS], "thesis.tex")
    (run / "thesis.tex").unlink()
    # only what a run writes: restarted (with or without --resume), temp files gone
    code, _, err = call(trainer_main, ["train", cfg, "--out", run, "--quiet", "--resume", *RINGS])
    assert code == 0, err
    assert "starting it over" in err
    assert not [p for p in run.rglob(".*")]
    assert (run / "pool" / "manifest.json").is_file()


# --------------------------------------------------------------------------- 3. file-system errors

def test_read_only_folder_is_refused_before_work(tmp_path, monkeypatch):
    import tempfile

    pool = make_pool(tmp_path / "pool")
    ro = tmp_path / "ro"
    ro.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):  # noqa: A002 - tempfile's own keyword
        if dir is not None and Path(dir).resolve() == ro.resolve():
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    called = []
    import ensembler.optimize as opt

    monkeypatch.setattr(opt, "optimize", lambda *a, **k: called.append(1))
    refused(tmp_path, ensembler_main, ["optimize", pool, "--out", ro / "e.json"], "read-only")
    assert not called  # refused before any statistics were computed
    cfg = write_config(tmp_path / "cfg.yaml", "# test\n")
    refused(tmp_path, trainer_main, ["train", cfg, "--out", ro / "run", *RINGS], "read-only")


def test_disk_full_is_one_line_and_leaves_no_temp_file(tmp_path, monkeypatch):
    pool, ens = make_ensemble(tmp_path)
    import mustangs.io.atomic as atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    refused(tmp_path, ensembler_main, ["sample", ens, "-n", 4, "--out", tmp_path / "g.png"], "disk is full")


def test_port_in_use_is_one_line(tmp_path, model):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BENTOML_HOME": str(tmp_path / "bento")}
        proc = subprocess.run([sys.executable, "-m", "serving.cli", "serve", str(model), "--port", str(port)],
                              capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: port {port} on 127.0.0.1 is already in use; stop what "
                                                "uses it or pass another --port"]


# --------------------------------------------------------------------------- 4. size limits

BOMB = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] +
                 [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]) + "\n"


@pytest.mark.parametrize("text,words", [
    (BOMB, "alias"),
    ("seed: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper"),
    ("- " * 5000 + "x\n", "nested deeper"),
    ("#" * (2 << 20), "larger than"),
])
def test_yaml_bombs_are_refused_fast(tmp_path, text, words):
    cfg = write_config(tmp_path / "cfg.yaml", text)
    refused(tmp_path, trainer_main, ["train", cfg, "--out", tmp_path / "run", "--dry-run"], words)


@pytest.mark.parametrize("override,words", [
    ("grid.height=3000", "memory"),
    ("network.latent_dim=1000000000", "memory"),
    ("data.batch_size=1000000000", "memory"),
    ("eval.fid_samples=10000000000", "memory"),
])
def test_sizes_are_refused_with_the_number_before_allocating(tmp_path, override, words, monkeypatch):
    monkeypatch.setenv("MUSTANGS_MEMORY_LIMIT", str(64 << 30))  # the same answer on any machine
    cfg = write_config(tmp_path / "cfg.yaml", "grid: {width: 3000}\n" if "grid" in override else "# test\n")
    line = refused(tmp_path, trainer_main, ["train", cfg, "--out", tmp_path / "run", *RINGS[1:4], override,
                                            "--dry-run"], words)
    assert "would need about" in line and "available" in line


def test_sample_count_is_checked_against_memory(tmp_path, model, monkeypatch):
    monkeypatch.setenv("MUSTANGS_MEMORY_LIMIT", str(64 << 30))
    refused(tmp_path, serving_main, ["sample", model, "-n", 10_000_000, "--out", tmp_path / "s.npy"], "memory")
    refused(tmp_path, serving_main, ["sample", model, "-n", "1e8", "--out", tmp_path / "s.npy"], "integer")


def test_sizes_inside_files_are_bounded(tmp_path):
    pool = make_pool(tmp_path / "pool")
    man = json.loads((pool / "manifest.json").read_text())
    man["network"]["latent_dim"] = 10**9
    (pool / "manifest.json").write_text(json.dumps(man))
    refused(tmp_path, ensembler_main, ["optimize", pool, "--out", tmp_path / "e.json"], "latent_dim")


# --------------------------------------------------------------------------- 5. paths escaping their folder

@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.safetensors", "sub/../../x.safetensors"])
def test_member_paths_stay_inside_the_pool(tmp_path, name):
    pool = make_pool(tmp_path / "pool")
    (tmp_path / "outside.safetensors").write_bytes((pool / "g0.safetensors").read_bytes())
    man = json.loads((pool / "manifest.json").read_text())
    man["generators"][0]["file"] = name
    (pool / "manifest.json").write_text(json.dumps(man))
    refused(tmp_path, ensembler_main, ["optimize", pool, "--out", tmp_path / "e.json"], "file")


def test_ensemble_members_must_be_generators_of_their_pool(tmp_path):
    pool, ens = make_ensemble(tmp_path)
    data = json.loads(ens.read_text())
    data["members"][0]["path"] = "/etc/passwd"
    ens.write_text(json.dumps(data))
    refused(tmp_path, ensembler_main, ["sample", ens, "--out", tmp_path / "g.png"], "not a .safetensors")
    (tmp_path / "loose.safetensors").write_bytes((pool / "g0.safetensors").read_bytes())
    data["members"][0]["path"] = "loose.safetensors"
    ens.write_text(json.dumps(data))
    refused(tmp_path, ensembler_main, ["sample", ens, "--out", tmp_path / "g.png"], "pool folder")


# --------------------------------------------------------------------------- 6. malformed files and flags

@pytest.mark.parametrize("edit,words", [
    (lambda m: m.update(mixtures=5), "mixtures"),
    (lambda m: m["generators"][0].update(origin="ab"), "origin"),
    (lambda m: m["generators"][0].update(sha256="xyz"), "sha256"),
    (lambda m: m["generators"][1].update(id="g0"), "more than once"),
    (lambda m: m["network"].update(latent_dim="8"), "latent_dim"),
    (lambda m: m.update(mixtures=[{"cell": [0, 0], "weights": {"nobody": 1.0}}]), "unknown generators"),
])
def test_malformed_manifests(tmp_path, edit, words):
    pool = make_pool(tmp_path / "pool")
    man = json.loads((pool / "manifest.json").read_text())
    edit(man)
    (pool / "manifest.json").write_text(json.dumps(man))
    refused(tmp_path, ensembler_main, ["optimize", pool, "--out", tmp_path / "e.json"], words)


@pytest.mark.parametrize("text,words", [
    ('{"format": "mustangs-pool/1", "x": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
    ('{"format": "mustangs-pool/1", "format": "mustangs-pool/1"}', "duplicate key 'format'"),
    ("\ufffe\x00garbage", "not valid JSON"),
])
def test_unparseable_manifests(tmp_path, text, words):
    pool = make_pool(tmp_path / "pool")
    (pool / "manifest.json").write_text(text)
    refused(tmp_path, ensembler_main, ["optimize", pool, "--out", tmp_path / "e.json"], words)


def test_empty_or_huge_values_in_configs(tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", "# test\n")
    refused(tmp_path, trainer_main, ["train", cfg, "--out", "", "--dry-run"], "--out is empty")
    refused(tmp_path, trainer_main, ["train", cfg, "seed=1180591620717411303424", "--dry-run"], "seed")
    refused(tmp_path, trainer_main, ["train", cfg, "threads=100000", "--dry-run"], "threads")


@pytest.mark.parametrize("edit,words", [
    (lambda d: d["members"][0].update(weight=-1), "weight"),
    (lambda d: d["members"][0].update(weight="big"), "weight"),
    (lambda d: [m.update(weight=0) for m in d["members"]], "every weight is 0"),
    (lambda d: d.update(members=7), "members"),
    (lambda d: d.update(seed="x"), "seed"),
])
def test_malformed_ensembles(tmp_path, edit, words):
    _, ens = make_ensemble(tmp_path)
    data = json.loads(ens.read_text())
    edit(data)
    ens.write_text(json.dumps(data))
    refused(tmp_path, ensembler_main, ["sample", ens, "--out", tmp_path / "g.png"], words)


def test_checkpoint_json_is_schema_checked(tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", "# test\n")
    run = tmp_path / "run"
    code, _, err = call(trainer_main, ["train", cfg, "--out", run, "--quiet", *RINGS])
    assert code == 0, err
    ck = run / "checkpoints"
    for p in ck.glob("gen-*.json"):
        doc = json.loads(p.read_text())
        doc["tensors"] = "../../pool/r0c0.safetensors"
        p.write_text(json.dumps(doc))
    idx = json.loads((ck / "index.json").read_text())
    idx["latest"]["json"] = "/etc/passwd"
    (ck / "index.json").write_text(json.dumps(idx))
    before = snapshot(tmp_path)
    code, _, err = call(trainer_main, ["train", cfg, "--out", run, "--quiet", "--resume", *RINGS[:-3],
                                       "coevolution.generations=2"])
    lines = err.strip().splitlines()  # a warning per unusable checkpoint, then the one error line
    assert code == 2 and "Traceback" not in err and lines[-1].startswith("error: no usable checkpoint")
    assert all(line.startswith("warning:") for line in lines[:-1])
    assert "leaves its folder" in err and "index.json is unreadable" in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv,words", [
    (["optimize", "{pool}", "--popsize", "1"], "--popsize"),
    (["optimize", "{pool}", "--budget", "0"], "--budget"),
    (["optimize", "{pool}", "--seed", str(2**70)], "--seed"),
    (["optimize", "{pool}", "--batch-size", "-5"], "--batch-size"),
    (["optimize", "{pool}", "--max-size", "0"], "--max-size"),
    (["sample", "{ens}", "--nrow", "-3"], "--nrow"),
    (["sample", "{ens}", "-n", "0"], "-n"),
    (["evaluate", "{ens}", "-n", "1"], "-n"),
    (["front", "{pool}", "--scalarisations", "1"], "--scalarisations"),
    (["front", "{pool}", "--max-points", "1"], "--max-points"),
    (["front", "{pool}", "--budget", "0"], "--budget"),
    (["front", "{pool}", "--seed", str(2**70)], "--seed"),
    (["front", "{pool}", "--max-size", "0"], "--max-size"),
    (["front", "{pool}", "--samples", "1"], "--samples"),
])
def test_ensembler_flags_are_range_checked(tmp_path, argv, words):
    pool, ens = make_ensemble(tmp_path)
    argv = [a.format(pool=pool, ens=ens) for a in argv]
    refused(tmp_path, ensembler_main, argv, words)


@pytest.mark.parametrize("argv,words", [
    (["sample", "{model}", "--seed", "-1", "--out", "{tmp}/s.png"], "--seed"),
    (["sample", "{model}", "--threads", "-1", "--out", "{tmp}/s.png"], "--threads"),
    (["serve", "{model}", "--port", "70000"], "--port"),
    (["serve", "{model}", "--max-n", "0"], "--max-n"),
    (["export", "{tmp}/e.json", "--out", "{tmp}/m.onnx", "--tolerance", "nan"], "--tolerance"),
    (["export", "{tmp}/e.json", "--out", "{tmp}/m.onnx", "--threads", "0"], "--threads"),
    (["export", "{tmp}/e.json", "--out", "{tmp}/m.onnx", "--stats-samples", "1"], "--stats-samples"),
    (["export", "{tmp}/e.json", "--out", "{tmp}/m.onnx", "--stats-seed", "-1"], "--stats-seed"),
    (["export", "{tmp}/f.json", "--out", "{tmp}/m.onnx", "--point", "-1"], "--point"),
    (["sample", "{model}", "--fid-weight", "-1", "--out", "{tmp}/s.png"], "--fid-weight"),
    (["sample", "{model}", "--fid-weight", "nan", "--out", "{tmp}/s.png"], "--fid-weight"),
])
def test_serving_flags_are_range_checked(tmp_path, model, argv, words):
    argv = [a.format(model=model, tmp=tmp_path) for a in argv]
    refused(tmp_path, serving_main, argv, words)


def test_trainer_flags_are_range_checked(tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", "# test\n")
    refused(tmp_path, trainer_main, ["train", cfg, "--workers", "-1"], "--workers")
    refused(tmp_path, trainer_main, ["train", cfg, "threads=-1", "--dry-run"], "threads")
    refused(tmp_path, trainer_main, ["score", "--fake", "noise", "--samples", "0"], "--samples")
    refused(tmp_path, trainer_main, ["classifier", "train", "--threads", "-1"], "--threads")


# --------------------------------------------------------------------------- 7. silently wrong

@pytest.mark.parametrize("text,words", [
    ("coevolution:\n  lr_g: .inf\n", "finite"),
    ("coevolution:\n  lr_d: .nan\n", "finite"),
    ("seed: 1\nseed: 2\n", "duplicate key 'seed'"),
    ("coevolution:\n  lr_g: 0.001\ncoevolution:\n  lr_d: 0.001\n", "duplicate key 'coevolution'"),
])
def test_silently_wrong_configs_are_refused(tmp_path, text, words):
    cfg = write_config(tmp_path / "cfg.yaml", text)
    refused(tmp_path, trainer_main, ["train", cfg, "--out", tmp_path / "run", "--dry-run"], words)


def test_exponent_floats_are_accepted(tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", "coevolution:\n  lr_d: 2e-4\n")
    code, out, err = call(trainer_main, ["train", cfg, "--dry-run", "coevolution.lr_g=1e-3", *RINGS[1:4]])
    assert code == 0, err
    assert "lr_g: 0.001" in out and "lr_d: 0.0002" in out


def test_onnx_metadata_must_match_the_graph(tmp_path, model):
    import onnx

    def with_meta(name: str, **changes) -> Path:
        m = onnx.load(str(model))
        for p in m.metadata_props:
            if p.key in changes:
                p.value = changes[p.key]
        onnx.save(m, str(tmp_path / name))
        return tmp_path / name

    ten = with_meta("ten.onnx", **{"mustangs.weights": json.dumps([0.1] * 10),
                                   "mustangs.generator_ids": json.dumps([f"g{i}" for i in range(10)])})
    refused(tmp_path, serving_main, ["sample", ten, "--out", tmp_path / "s.png"], "no generator for component")
    two = with_meta("two.onnx", **{"mustangs.weights": json.dumps([0.5, 0.5]),
                                   "mustangs.generator_ids": json.dumps(["a", "b"])})
    refused(tmp_path, serving_main, ["info", two], "more generators")
    z = with_meta("z.onnx", **{"mustangs.latent_dim": "9"})
    refused(tmp_path, serving_main, ["info", z], "latent_dim 9")
    shape = with_meta("shape.onnx", **{"mustangs.sample_shape": "[3, 28, 28]"})
    refused(tmp_path, serving_main, ["info", shape], "sample shape")
    ids = with_meta("ids.onnx", **{"mustangs.generator_ids": json.dumps(["a"])})
    refused(tmp_path, serving_main, ["info", ids], "generator ids")
    inf = with_meta("inf.onnx", **{"mustangs.weights": "[1e999, 1, 1]"})
    refused(tmp_path, serving_main, ["info", inf], "finite")


def _front_of(ens: Path, **point_changes) -> Path:
    """A hand-made one-point ``front.json`` beside ``ens`` whose point holds ``ens``'s members."""
    data = json.loads(ens.read_text())
    point = {"index": 0, "size": len(data["members"]), "objectives": {"tvd": 0.1, "fid": 1.0},
             "members": data["members"], **point_changes}
    front = ens.parent / "f.json"
    front.write_text(json.dumps({"format": "mustangs-front/1", "network": data["network"], "dataset": "fashion-mnist",
                                 "objectives": ["tvd", "fid"], "points": [point]}))
    return front


@pytest.mark.parametrize("changes,words", [
    ({"index": 3}, "index"),
    ({"objectives": {"tvd": 0.1, "is": 1.0}}, "objectives"),
    ({"objectives": {"tvd": 0.1, "fid": float("inf")}}, "finite"),
    ({"size": 0}, "size"),
    ("negative weight", "weight"),
    ("escaping path", "does not lie in a pool folder"),
])
def test_malformed_fronts_are_refused_by_export(tmp_path, changes, words):
    pool, ens = make_ensemble(tmp_path)
    members = json.loads(ens.read_text())["members"]
    if changes == "negative weight":
        changes = {"members": [dict(members[0], weight=-1.0)] + members[1:]}
    elif changes == "escaping path":
        changes = {"members": [dict(members[0], path=str(tmp_path / "elsewhere" / "g0.safetensors"))]}
    front = _front_of(ens, **changes)
    refused(tmp_path, serving_main, ["export", front, "--point", "0", "--out", tmp_path / "m.onnx", "--no-stats"],
            words)


def test_duplicate_members_are_merged_and_huge_weights_work(tmp_path):
    pool, ens = make_ensemble(tmp_path)
    data = json.loads(ens.read_text())
    data["members"] = [dict(data["members"][0], weight=1e308) for _ in range(2000)] + [
        dict(data["members"][1], weight=1e308)]
    ens.write_text(json.dumps(data))
    loaded = Ensemble.load(ens)
    assert len(loaded.members) == 2 and np.allclose(loaded.weights, [2000 / 2001, 1 / 2001])
    code, _, err = call(ensembler_main, ["sample", ens, "-n", 8, "--out", tmp_path / "g.png"])
    assert code == 0, err


def test_output_extension_must_match_the_format(tmp_path, model):
    pool, ens = make_ensemble(tmp_path)
    refused(tmp_path, ensembler_main, ["sample", ens, "--out", tmp_path / "g.txt"], ".png")
    refused(tmp_path, serving_main, ["sample", model, "--out", tmp_path / "g.txt"], ".png or .npy")
    refused(tmp_path, serving_main, ["export", ens, "--out", tmp_path / "m.txt"], ".onnx")
    refused(tmp_path, ensembler_main, ["optimize", pool, "--out", tmp_path / "e.yaml"], ".json")
    refused(tmp_path, ensembler_main, ["front", pool, "--out", tmp_path / "f.txt"], ".json")
    refused(tmp_path, ensembler_main, ["front", pool, "--out", tmp_path / "f.json", "--plot", tmp_path / "f.jpg"],
            ".png")
    refused(tmp_path, serving_main, ["export", pool, "--out", tmp_path / "m.txt"], ".onnx")


# --------------------------------------------------------------------------- 8. smaller ones

def test_unsupported_opset_is_one_line(tmp_path):
    _, ens = make_ensemble(tmp_path)
    refused(tmp_path, serving_main, ["export", ens, "--out", tmp_path / "m.onnx", "--opset", "3"], "--opset 3")


def test_bento_start_line_names_the_real_bind_address():
    import logging

    from serving.service import _TrueBindAddress, bind_host

    assert bind_host(["bentoml", "serve", "x", "--host", "0.0.0.0"], {}) == "0.0.0.0"
    assert bind_host(["bentoml", "serve", "x", "--host=::"], {}) == "::"
    assert bind_host(["bentoml", "serve", "x"], {"BENTOML_HOST": "10.0.0.2"}) == "10.0.0.2"
    rec = logging.LogRecord("bentoml.serve", logging.INFO, __file__, 1,
                            'Starting production %s BentoServer from "%s" listening on %s://%s:%d',
                            ("HTTP", "mustangs:1", "http", "localhost", 3000), None)
    assert _TrueBindAddress("0.0.0.0").filter(rec)
    assert "http://0.0.0.0:3000" in rec.getMessage() and "every network interface" in rec.getMessage()
    rec2 = logging.LogRecord("bentoml.serve", logging.INFO, __file__, 1, "listening on %s://%s:%d",
                             ("http", "localhost", 3000), None)
    _TrueBindAddress("localhost").filter(rec2)
    assert rec2.getMessage() == "listening on http://localhost:3000"


def test_atomic_writes_honour_the_umask(tmp_path):
    from mustangs.io.atomic import atomic_dir, write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("y")
        os.umask(0o027)
        write_text_atomic(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o640
