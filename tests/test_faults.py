"""A full disk (ENOSPC) or a failing one (EIO) at every write of every command that writes.

Each command is run once cleanly (its outputs and caches then exist), its writes are counted,
and it is run again with each write failing in turn (see tests/diskfault.py). Every failure
must be: exit 2, one ``error:`` line naming the path and saying what happened, no traceback,
no temporary file left, every file that existed before unchanged — and for a training run, a
folder that ``--resume`` finishes with the pool an undisturbed run writes.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
import torch

from diskfault import assert_disk_error, count_writes, disk_fault, snapshot, temp_files

RINGS = ["threads=1", "data.dataset=rings", "network.arch=rings-mlp", "network.latent_dim=8", "grid.height=2",
         "grid.width=2", "data.sampling_ratio=0.02", "data.batch_size=50", "coevolution.batches_per_generation=2",
         "coevolution.generations=1", "mixture.eval_samples=100", "eval.fid_samples=100", "output.report=false"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSTANGS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MUSTANGS_OFFLINE", "1")
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bento"))


def call(main, argv) -> tuple[int, str, str]:
    """Run a CLI entry point in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def _pool_bytes(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "pool").glob("*.safetensors"))}


# --------------------------------------------------------------------------- trainer

def _train(cfg: Path, out: Path, *flags, over: tuple = ()) -> tuple[int, str, str]:
    from trainer.cli import main as trainer_main

    return call(trainer_main, ["train", cfg, "--out", out, "--quiet", *flags, *RINGS, *over])


def test_training_survives_a_full_disk_at_every_write(tmp_path):
    """Fresh runs: each write fails once (ENOSPC, then EIO), then ``--resume`` gives the straight run's pool."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("# trainer train cfg.yaml\n")
    (tmp_path / "straight").mkdir()
    (tmp_path / "probe").mkdir()
    assert _train(cfg, tmp_path / "straight" / "run")[0] == 0  # fills the caches (real statistics)
    n, _ = count_writes(lambda: _train(cfg, tmp_path / "probe" / "run"))
    assert n >= 5  # config, checkpoint tensors + JSON + index, pool, ...
    want = _pool_bytes(tmp_path / "straight" / "run")
    for i in range(1, n + 1):
        kind = "ENOSPC" if i % 2 else "EIO"
        (tmp_path / f"w{i}").mkdir()
        run = tmp_path / f"w{i}" / "run"
        with disk_fault(kind, nth=i):
            code, _, err = _train(cfg, run)
        assert_disk_error(code, err, kind, run, log_before=True)
        assert temp_files(run) == [], i
        code, _, err = _train(cfg, run, "--resume")
        assert code == 0, f"write {i}: {err[-600:]}"
        assert _pool_bytes(run) == want and temp_files(run) == [], i


def test_resume_on_a_full_disk_keeps_what_was_there(tmp_path):
    """A resumed run whose writes fail keeps the earlier checkpoint and pool, and resumes again."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("# trainer train cfg.yaml\n")
    two = {"over": ("coevolution.generations=2",)}
    (tmp_path / "straight").mkdir()
    assert _train(cfg, tmp_path / "straight" / "run", **two)[0] == 0
    want = _pool_bytes(tmp_path / "straight" / "run")
    first = tmp_path / "first" / "run"
    (tmp_path / "first").mkdir()
    assert _train(cfg, first)[0] == 0
    probe = tmp_path / "probe" / "run"
    shutil.copytree(first, probe)
    n, total = count_writes(lambda: _train(cfg, probe, "--resume", **two))
    assert n >= 5, n  # config, checkpoint (tensors, JSON, index), pool
    for i in sorted({1, 2, n // 2, n}):
        (tmp_path / f"r{i}").mkdir()
        run = tmp_path / f"r{i}" / "run"
        shutil.copytree(first, run)
        pool_before = snapshot(run / "pool")
        with disk_fault("ENOSPC", nth=i):
            code, _, err = _train(cfg, run, "--resume", **two)
        assert_disk_error(code, err, "ENOSPC", run, log_before=True)
        assert temp_files(run) == [] and snapshot(run / "pool") == pool_before, i
        code, _, err = _train(cfg, run, "--resume", **two)
        assert code == 0, f"write {i}: {err[-600:]}"
        assert _pool_bytes(run) == want and temp_files(run) == []
    # every write past the first kilobyte fails: the same, whatever the write
    run = tmp_path / "after" / "run"
    shutil.copytree(first, run)
    with disk_fault("EIO", after=1024):
        code, _, err = _train(cfg, run, "--resume", **two)
    assert_disk_error(code, err, "EIO", run, log_before=True)
    assert total > 1024 and temp_files(run) == []


# --------------------------------------------------------------------------- ensembler, serving, classifier

def _lipizzaner_folder(folder: Path) -> Path:
    from mustangs.pool.networks import NetSpec, build_generator

    folder.mkdir()
    for s in range(2):
        torch.manual_seed(s)
        state = {k.removeprefix("net."): v for k, v in build_generator(NetSpec("mlp", 16, (1, 28, 28))).state_dict().items()}
        torch.save(state, folder / f"generator-{s}.pkl")
    return folder


def _commands(tmp: Path) -> list[tuple[str, object, list]]:
    """(name, main, argv) of every writing command, on a rings pool, in an order where each has its input."""
    from conftest import rings_pool
    from ensembler.cli import main as ens
    from serving.cli import main as srv

    pool = rings_pool(tmp / "rings")
    lip = _lipizzaner_folder(tmp / "lip")
    cpu = ["--device", "cpu"]
    return [
        ("ensembler optimize", ens, ["optimize", pool, "--objective", "tvd", "--budget", 20, "--samples", 500,
                                     "--verify-samples", 500, "--diversity-samples", 0, *cpu, "--out", tmp / "e.json"]),
        ("ensembler front", ens, ["front", pool, "--objectives", "tvd,fid", "--classifier", "rings",
                                  "--scalarisations", 2, "--budget", 20, "--samples", 500, "--diversity-samples", 0,
                                  *cpu, "--out", tmp / "f.json"]),
        ("ensembler sample png", ens, ["sample", tmp / "e.json", "-n", 8, "--out", tmp / "g.png"]),
        ("ensembler import-lipizzaner", ens, ["import-lipizzaner", lip, "--out", tmp / "lpool", "--force"]),
        ("serving export", srv, ["export", tmp / "e.json", "--out", tmp / "m.onnx", "--classifier", "rings",
                                 "--stats-samples", 500, "--score-samples", 500, *cpu, "--no-check", "--threads", 1]),
        ("serving sample png", srv, ["sample", tmp / "m.onnx", "-n", 4, "--seed", 1, "--out", tmp / "s.png"]),
        ("serving sample npy", srv, ["sample", tmp / "m.onnx", "-n", 4, "--seed", 1,
                                     "--out", tmp / "s.npy"]),
    ]


def test_every_writing_command_fails_cleanly_on_a_full_disk(tmp_path):
    counts = {}
    for name, main, argv in _commands(tmp_path):
        code, _, err = call(main, argv)                      # outputs (and caches) now exist
        assert code == 0, f"{name}: {err[-600:]}"
        n, _ = count_writes(lambda: call(main, argv))       # the second run, with warm caches
        assert n >= 1, name
        counts[name] = n
        for i in range(1, n + 1):
            kind = "ENOSPC" if i % 2 else "EIO"
            before = snapshot(tmp_path)
            with disk_fault(kind, nth=i):
                code, _, err = call(main, argv)
            assert_disk_error(code, err, kind, tmp_path, log_before=True)  # progress lines, then the error
            assert snapshot(tmp_path) == before, f"{name}: write {i} changed files"
            assert temp_files(tmp_path) == [], name
        code, _, err = call(main, argv)                      # and it works again once there is space
        assert code == 0, f"{name}: {err[-600:]}"
    print("writes per command:", counts)


def test_classifier_training_writes_weights_and_json_together(tmp_path):
    from digits import write_mnist_idx
    from trainer.cli import main as trainer_main

    idx = write_mnist_idx(tmp_path / "idx")
    argv = ["classifier", "train", "--dataset", "mnist", "--data-dir", idx, "--epochs", 1, "--threads", 1,
            "--no-augment", "--out", tmp_path / "clf"]
    code, _, err = call(trainer_main, argv)
    assert code == 0, err
    argv[argv.index("--epochs") - 0 + 1] = 1
    for kind, spec in (("ENOSPC", {"nth": 1}), ("EIO", {"nth": 2}), ("ENOSPC", {"after": 100})):
        before = snapshot(tmp_path)
        with disk_fault(kind, **spec):
            code, _, err = call(trainer_main, [*argv, "--seed", 1])
        assert_disk_error(code, err, kind, tmp_path, log_before=True)
        assert snapshot(tmp_path) == before and temp_files(tmp_path) == []


def test_safetensors_leftover_is_cleaned_on_resume(tmp_path):
    """A ``.tmpXXXXXX`` that safetensors' own writer left (Mustangs before issue 23) no longer blocks the folder."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("# trainer train cfg.yaml\n")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "metrics.jsonl").write_text("")
    (run / "checkpoints" / ".gen-000001.safetensors.ab12cd34.tmp").write_bytes(b"half")
    (run / "checkpoints" / ".tmpL3CDJu").write_bytes(b"x" * 1000)
    code, _, err = _train(cfg, run, "--resume")
    assert code == 0, err
    assert temp_files(run) == [] and (run / "pool" / "manifest.json").is_file()
    # and a fresh run (no --resume) into such a folder starts over as well
    (run2 := tmp_path / "run2").mkdir()
    (run2 / "config.yaml").write_text("seed: 0\n")
    (run2 / "checkpoints").mkdir()
    (run2 / "checkpoints" / ".tmpAb3dE9").write_bytes(b"x")
    code, _, err = _train(cfg, run2)
    assert code == 0, err
    assert temp_files(run2) == []
