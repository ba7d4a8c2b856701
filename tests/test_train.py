"""End-to-end ``trainer train`` on tiny data: outputs of design.md §7."""

from __future__ import annotations

import json
import re

import pytest
import torch

from mustangs.pool.format import read_pool
from trainer.cli import main

from conftest import needs_fashion

RINGS = ["threads=1", "data.dataset=rings", "network.arch=rings-mlp", "network.latent_dim=8", "grid.height=2", "grid.width=2",
         "data.sampling_ratio=0.02", "data.batch_size=50", "coevolution.batches_per_generation=8",
         "mixture.eval_samples=300", "eval.fid_samples=500", "output.samples_per_cell=4"]


def run_cli(tmp_path, name, overrides, *flags):
    cfg = tmp_path / "cfg.yaml"
    if not cfg.exists():
        cfg.write_text("# test config\n")
    return main(["train", str(cfg), "--out", str(tmp_path / name), "--quiet", *flags, *overrides])


@pytest.mark.slow
def test_rings_run_leaves_every_output(tmp_path):
    assert run_cli(tmp_path, "run", RINGS + ["coevolution.generations=3"]) == 0
    run = tmp_path / "run"
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in lines] == [1, 2, 3]
    for rec in lines:
        assert len(rec["cells"]) == 4 and "mixture" in rec["best"]
        for cell in rec["cells"]:
            assert {"loss_g", "loss_d", "fitness_g", "fitness_d", "lr_g", "lr_d", "loss_choice",
                    "mixture_weights"} <= set(cell)
            assert any(k.startswith("fid_cls") for k in cell["scores"])
            assert cell["loss_choice"] in ("bce", "mse", "heuristic")
            assert abs(sum(cell["mixture_weights"]) - 1) < 1e-9
    pool = read_pool(run / "pool")
    assert len(pool) == 4 and pool.dataset == "rings"
    for i in range(4):
        g = pool.load_generator(i)
        assert g(torch.randn(3, 8)).shape == (3, 2)
    assert {tuple(e.origin["cell"]) for e in pool.entries} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert all(any(k.startswith("fid_cls") for k in e.scores) for e in pool.entries)
    # sample-level diversity on min(eval.diversity_samples, eval.fid_samples) samples, for generators and mixtures
    div = {f"{m}_cls500" for m in ("precision", "recall", "density", "coverage", "kid")}
    assert all(div <= set(e.scores) for e in pool.entries)
    assert len(pool.mixtures) == 4 and all(len(m["weights"]) == 3 for m in pool.mixtures)
    assert all(div <= set(m["scores"]) for m in pool.mixtures)
    assert pool.extra["classifier"] == {"name": "rings", "dataset": "rings", "sha256": "analytic-rings-v1-std0.02",
                                        "source": "analytic", "forced": False}
    html = (run / "report.html").read_text()
    assert "report/heatmap.png" in html and (run / "report" / "heatmap.png").stat().st_size > 1000
    assert (run / "report" / "loss_choice.png").exists() and (run / "report" / "curves.png").exists()
    refs = json.loads((run / "pool" / "manifest.json").read_text())["references"]
    assert set(refs) == {"fid_cls300", "tvd_cls300", "fid_cls500", "tvd_cls500"}
    assert refs["fid_cls500"]["real"] < refs["fid_cls500"]["noise"]  # the reference frame is meaningful
    assert "reference: real images" in html and "reference: uniform noise" in html
    assert sorted(p.name for p in (run / "samples").iterdir()) == [f"gen-00000{i}.png" for i in (1, 2, 3)]
    assert "coevolution:" in (run / "config.yaml").read_text()
    assert_tensorboard_readable(run, generations=3, cells=4, images=False)


def assert_tensorboard_readable(run, generations: int, cells: int, images: bool) -> None:
    """The run's TensorBoard event file reads back with TensorBoard's own reader: per-cell scalars
    for every generation, the best mixture, loss choices, final scores (and sample grids for images)."""
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    files = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    acc = ea_mod.EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for key in ("loss_g", "loss_d", "lr_g", "lr_d", "loss_choice"):
        assert f"cell/r0c0/{key}" in tags
    assert [e.step for e in acc.Scalars("cell/r0c0/loss_g")] == list(range(1, generations + 1))
    metrics = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in acc.Scalars("cell/r0c0/loss_g")] == pytest.approx(
        [m["cells"][0]["loss_g"] for m in metrics], rel=1e-6)
    assert any(t.startswith("best/mixture_fid_cls") for t in tags)
    assert sum(acc.Scalars(f"loss_choices/{loss}")[-1].value for loss in ("bce", "mse", "heuristic")) == cells
    assert any(t.startswith("final/") for t in tags)
    if images:
        assert len(acc.Images("samples")) == generations


def test_ablations_run(tmp_path):
    base = RINGS + ["coevolution.generations=1", "coevolution.batches_per_generation=2", "output.report=false",
                    "eval.every=null", "coevolution.loss=bce"]
    assert run_cli(tmp_path, "spagan", base + ["coevolution.selection=false"]) == 0
    assert run_cli(tmp_path, "pagan", base + ["coevolution.selection=false", "coevolution.exchange=false"]) == 0
    rec = json.loads((tmp_path / "pagan" / "metrics.jsonl").read_text())
    assert all(c["selected_g"] == c["cell"] and c["replaced_g"] for c in rec["cells"])
    assert all(len(c["mixture_weights"]) == 1 for c in rec["cells"])
    assert all(c["loss_choice"] == "bce" for c in rec["cells"])


def test_refuses_to_overwrite_a_run(tmp_path, capsys):
    # A folder with files that no run writes is refused ...
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    assert run_cli(tmp_path, "run", RINGS) == 2
    err = capsys.readouterr().err
    assert "already holds files" in err and "notes.txt" in err
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    # ... and so is a fresh run into a folder that holds a checkpointed run (it says to resume).
    base = RINGS + ["coevolution.generations=1", "coevolution.batches_per_generation=2", "output.report=false",
                    "eval.every=null"]
    assert run_cli(tmp_path, "done", base) == 0
    capsys.readouterr()
    assert run_cli(tmp_path, "done", base) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err


def test_without_a_classifier_training_still_runs(tmp_path, monkeypatch, capsys):
    from mustangs.errors import UserError
    import mustangs.judge.classifier_store as store

    def no_classifier(*a, **k):
        raise UserError("no evaluation classifier for dataset 'rings'")

    monkeypatch.setattr(store, "resolve", no_classifier)
    assert run_cli(tmp_path, "run", RINGS + ["coevolution.generations=1", "coevolution.batches_per_generation=2",
                                             "output.report=false"]) == 0
    assert "warning: no evaluation classifier" in capsys.readouterr().err
    assert len(read_pool(tmp_path / "run" / "pool")) == 4


@needs_fashion
@pytest.mark.slow
def test_fashion_mnist_subset_run_is_scored_on_the_classifier(tmp_path):
    over = ["grid.height=2", "grid.width=2", "data.sampling_ratio=0.0167", "data.batch_size=50",
            "coevolution.batches_per_generation=4", "coevolution.generations=2", "mixture.eval_samples=200",
            "eval.fid_samples=200", "output.report=false"]
    # configs/quickstart.yaml itself, shrunk: its run folder opens in TensorBoard
    from conftest import ROOT

    assert main(["train", str(ROOT / "configs" / "quickstart.yaml"), "--out", str(tmp_path / "fm"), "--quiet",
                 *over, "threads=1"]) == 0
    rec = json.loads((tmp_path / "fm" / "metrics.jsonl").read_text().splitlines()[-1])
    assert all("fid_cls200" in c["scores"] for c in rec["cells"])
    pool = read_pool(tmp_path / "fm" / "pool")
    assert len(pool) == 4 and pool.load_generator(0)(torch.randn(2, 64)).shape == (2, 1, 28, 28)
    assert pool.extra["classifier"]["name"] == "fashion-mnist" and pool.extra["classifier"]["source"] == "shipped"
    assert_tensorboard_readable(tmp_path / "fm", generations=2, cells=4, images=True)


def test_selected_adversary_batched_equals_loop_and_stays_in_the_cell():
    """``coevolution.adversary=selected``: vmap == per-cell loop, and without selection no cell
    touches another (the run equals one with exchange off)."""
    from mustangs.data.datasets import ArrayDataset
    from trainer.coevolution import Coevolution
    from trainer.config import load_train_config

    g = torch.Generator().manual_seed(0)
    data = ArrayDataset("fashion-mnist", torch.randint(0, 256, (200, 1, 28, 28), generator=g, dtype=torch.uint8),
                        torch.zeros(200, dtype=torch.long), 10)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        def run(engine, over=()):
            cfg = load_train_config(None, ["grid.height=2", "grid.width=2", "data.batch_size=8",
                                           "coevolution.batches_per_generation=3", "coevolution.adversary=selected", *over])
            co = Coevolution(cfg, data, "cpu", engine=engine)
            b = co.init_block()
            recs = [co.step(b, score=False) for _ in range(2)]
            return b, recs

        (b1, r1), (b2, r2) = run("vmap"), run("loop")
        for k in b1.G.params:
            assert torch.allclose(b1.G.params[k], b2.G.params[k], atol=1e-5), k
        for k in b1.D.params:
            assert torch.allclose(b1.D.params[k], b2.D.params[k], atol=1e-5), k
        assert [c["replaced_g"] for c in r1[-1]] == [c["replaced_g"] for c in r2[-1]]
        # no selection: each cell is an isolated GAN, exactly as with exchange off
        (a, _), (c, _) = run("vmap", ["coevolution.selection=false"]), run("vmap", ["coevolution.selection=false",
                                                                                      "coevolution.exchange=false"])
        for k in a.G.params:
            assert torch.equal(a.G.params[k], c.G.params[k]), k
    finally:
        torch.set_num_threads(n)


@pytest.mark.slow
def test_selected_adversary_resume_is_bit_identical(tmp_path):
    over = RINGS + ["coevolution.batches_per_generation=4", "output.report=false", "mixture.eval_samples=200",
                    "eval.fid_samples=200", "coevolution.adversary=selected"]
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    assert run_cli(tmp_path / "a", "run", over + ["coevolution.generations=3"]) == 0
    assert run_cli(tmp_path / "b", "run", over + ["coevolution.generations=2"]) == 0
    assert run_cli(tmp_path / "b", "run", over + ["coevolution.generations=3"], "--resume") == 0
    pools = [{p.name: p.read_bytes() for p in sorted((tmp_path / d / "run" / "pool").glob("*.safetensors"))}
             for d in ("a", "b")]
    assert pools[0] == pools[1] and len(pools[0]) == 4


def test_without_a_terminal_progress_is_plain_lines(tmp_path, capsys, monkeypatch):
    """No TTY (capsys): plain lines, batch k/N with a rate inside a generation, one line at its end."""
    import mustangs.console.progress

    monkeypatch.setattr(mustangs.console.progress, "EVERY", 0.0)  # a line after every batch (normally every 10 s)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("# test config\n")
    over = RINGS + ["coevolution.generations=2", "coevolution.batches_per_generation=2", "output.report=false"]
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), *over]) == 0   # no --quiet
    lines = [s for s in capsys.readouterr().err.splitlines() if s.startswith("gen ")]
    beats = [s for s in lines if ": batch " in s]
    seen = [s.split(" (")[0] for s in beats]  # (the ticker thread may add lines of its own)
    assert all(f"gen {g}/2: batch {b}/2" in seen for g in (1, 2) for b in (1, 2))
    assert seen.index("gen 1/2: batch 2/2") < seen.index("gen 2/2: batch 1/2")
    assert all(" batch/s)" in s for s in beats)
    ends = [s for s in lines if re.match(r"gen \d/2: [\d.]+ s", s)]
    assert [s.split(":")[0] for s in ends] == ["gen 1/2", "gen 2/2"]
    assert all("best mixture fid_cls" in s for s in ends)
