"""End-to-end ``trainer train`` on tiny data: outputs of design.md §7."""

from __future__ import annotations

import json

import pytest
import torch

from trainer.cli import main
from trainer.pool import read_pool

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
    assert len(pool.mixtures) == 4 and all(len(m["weights"]) == 3 for m in pool.mixtures)
    html = (run / "report.html").read_text()
    assert "report/heatmap.png" in html and (run / "report" / "heatmap.png").stat().st_size > 1000
    assert (run / "report" / "loss_choice.png").exists() and (run / "report" / "curves.png").exists()
    assert sorted(p.name for p in (run / "samples").iterdir()) == [f"gen-00000{i}.png" for i in (1, 2, 3)]
    assert "coevolution:" in (run / "config.yaml").read_text()


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
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    assert run_cli(tmp_path, "run", RINGS) == 2
    err = capsys.readouterr().err
    assert "already holds files" in err and "--resume" in err


def test_without_a_classifier_training_still_runs(tmp_path, monkeypatch, capsys):
    import trainer.classifier as clf
    from trainer.errors import UserError

    def no_classifier(*a, **k):
        raise UserError("no evaluation classifier for dataset 'rings'")

    monkeypatch.setattr(clf, "load_classifier", no_classifier)
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
    assert run_cli(tmp_path, "fm", over) == 0
    rec = json.loads((tmp_path / "fm" / "metrics.jsonl").read_text().splitlines()[-1])
    assert all("fid_cls200" in c["scores"] for c in rec["cells"])
    pool = read_pool(tmp_path / "fm" / "pool")
    assert len(pool) == 4 and pool.load_generator(0)(torch.randn(2, 64)).shape == (2, 1, 28, 28)
