"""report.html tells a reader whether a number is good: references beside fid/tvd, larger grids,
and the ensemble chosen by ``ensembler optimize`` with every candidate's objectives side by side.

A tiny rings run (analytic classifier, a few seconds) stands in for a real one.
"""

from __future__ import annotations

import json
import re

import pytest

from ensembler.cli import main as ensembler
from mustangs.report import ENSEMBLE_GRID, write_report
from trainer.cli import main as trainer

from test_train import RINGS


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    cfg = root / "cfg.yaml"
    cfg.write_text("# test config\n")
    assert trainer(["train", str(cfg), "--out", str(root / "run"), "--quiet", *RINGS,
                    "coevolution.generations=2"]) == 0
    return root / "run"


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _optimize(run, out, *extra) -> int:
    return ensembler(["optimize", str(run / "pool"), "--objective", "tvd", "--budget", "200", "--samples", "1000",
                      "--verify-samples", "1000", "--device", "cpu", "--out", str(out), *extra])


def test_optimize_report_adds_the_ensemble_with_both_objectives_for_every_candidate(run, tmp_path, monkeypatch):
    monkeypatch.setenv("MUSTANGS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "elsewhere.json"  # the ensemble need not sit in the run folder with --report
    assert _optimize(run, out, "--report") == 0
    data = json.loads(out.read_text())
    names = [c["name"] for c in data["candidates"]]
    pool_ids = [e["id"] for e in json.loads((run / "pool" / "manifest.json").read_text())["generators"]]
    assert names == pool_ids + ["uniform", "ensemble"]
    for c in data["candidates"]:
        assert {"fid_cls1k", "tvd_cls1k", "is_cls1k"} <= set(c)
    assert data["candidates"][-1]["tvd_cls1k"] == pytest.approx(data["metrics"]["estimated"]["tvd_cls1k"])
    refs = data["references"]
    assert set(refs) == {"fid_cls1k", "tvd_cls1k"} and refs["fid_cls1k"]["real"] < refs["fid_cls1k"]["noise"]

    html = (run / "report.html").read_text()
    text = _text(html)
    assert "Ensemble (elsewhere.json)" in text
    assert "Every candidate, both objectives" in text and "reference: real images" in text
    for name in names:
        assert re.search(rf"<td>{name}</td>(<td>[^<]+</td>){{3}}", html), name  # fid, tvd and is for each
    assert (run / "report" / "ensemble_tradeoff.png").stat().st_size > 1000
    assert (run / "report" / ENSEMBLE_GRID).stat().st_size > 100 and f"report/{ENSEMBLE_GRID}" in html
    # Sample grids are drawn three times their size, without smoothing.
    assert re.search(r"<img src='samples/gen-000002.png' width=\d+ [^>]*pixelated", html)


def test_ensemble_json_in_the_run_folder_is_picked_up_by_a_rebuilt_report(run, tmp_path, monkeypatch):
    monkeypatch.setenv("MUSTANGS_CACHE", str(tmp_path / "cache"))
    out = run / "ensemble.json"
    try:
        assert _optimize(run, out) == 0  # no --report: the trainer's report shows it when rebuilt
        (run / "report" / ENSEMBLE_GRID).unlink(missing_ok=True)
        text = _text(write_report(run).read_text())
        assert "Ensemble (ensemble.json)" in text and "Every candidate, both objectives" in text
        assert "ensembler optimize ... --report" in text  # says how to get references for its protocol
        assert "reference: uniform noise" in text  # the pool's own scores keep theirs
    finally:
        out.unlink(missing_ok=True)


def test_report_refuses_a_pool_outside_a_run(run, tmp_path, capsys):
    lone = tmp_path / "lone"
    (lone / "pool").mkdir(parents=True)
    for f in (run / "pool").iterdir():
        (lone / "pool" / f.name).write_bytes(f.read_bytes())
    code = ensembler(["optimize", str(lone / "pool"), "--report", "--out", str(tmp_path / "e.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--report" in err and "metrics.jsonl" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "e.json").exists()
