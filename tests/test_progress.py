"""Plain progress lines for runs without a terminal (logs, Slurm, CI, ``| cat``)."""

from __future__ import annotations

from mustangs.console import progress
from mustangs.console.progress import PlainProgress, nested, progress_bar


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_line_at_least_every_interval_with_count_and_rate():
    clock, out = Clock(), []
    bar = PlainProgress(total=50, desc="gen 3/30", unit="batch", every=10.0, log=out.append, clock=clock)
    for _ in range(9):  # 9 batches in 9 s: nothing yet
        clock.t += 1.0
        bar.update()
    assert out == []
    clock.t += 1.0
    bar.update()  # 10 s of work
    assert out == ["gen 3/30: batch 10/50 (1 batch/s)"]
    clock.t += 5.0
    bar.update(5)
    assert len(out) == 1  # 5 s since the last line
    bar.set_postfix_str("best mixture fid_cls1k=12.50")
    clock.t += 5.0
    bar.update(5)
    assert out[-1] == "gen 3/30: batch 20/50 (1 batch/s), best mixture fid_cls1k=12.50"


def test_restart_starts_a_new_stretch():
    clock, out = Clock(), []
    bar = PlainProgress(total=600, unit="batch", every=10.0, log=out.append, clock=clock, initial=200)
    clock.t += 8.0
    bar.restart("gen 4/6", total=100)
    clock.t += 8.0
    bar.update(40)
    assert out == []  # the 10 s window starts again with the generation
    clock.t += 2.0
    bar.update(10)
    assert out == ["gen 4/6: batch 50/100 (5 batch/s)"]


def test_wraps_an_iterable():
    clock, out = Clock(), []
    items = []
    for x in PlainProgress(range(3), desc="statistics", unit="generator", every=0.0, log=out.append, clock=clock):
        items.append(x)
        clock.t += 1.0
    assert items == [0, 1, 2] and out[-1].startswith("statistics: generator 3/3 (")


def test_choice_of_display(monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    assert isinstance(progress_bar(total=3, progress=None), PlainProgress)  # a log file: plain lines
    assert progress_bar(total=3, progress=False).disable  # --quiet: nothing
    assert not isinstance(progress_bar(total=3, progress=True), PlainProgress)  # forced: a tqdm bar
    assert nested(None) is None and nested(True) is False
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    bar = progress_bar(total=3, progress=None)
    assert not isinstance(bar, PlainProgress) and not bar.disable  # a terminal: tqdm
    bar.close()
    assert nested(None) is False  # no second bar on a terminal


def test_a_phase_without_updates_is_repeated_by_the_ticker():
    """Work that never calls update (scoring, final scores) still prints a line every interval."""
    import time

    out = []
    bar = PlainProgress(total=10, desc="gen 1/2", unit="batch", every=0.05, log=out.append, ticker=True)
    try:
        bar.phase("final scores: 5000 samples")
        time.sleep(0.4)
    finally:
        bar.close()
    assert out[0] == "final scores: 5000 samples"
    repeats = [s for s in out[1:] if s.startswith("final scores: 5000 samples (")]
    assert len(repeats) >= 2 and repeats == out[1:]
    n = len(out)
    time.sleep(0.15)
    assert len(out) == n  # closed: the thread has stopped


def test_front_prints_one_plain_progress_over_all_scalarisations(monkeypatch, capsys):
    """``ensembler front`` runs scalarisations x budget evaluations: in a log it says how far it is."""
    import numpy as np

    from ensembler.front import compute_front
    from ensembler.objectives import MixtureObjective, parse_objective
    from test_ensembler import _fake_stats

    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    monkeypatch.setattr(progress, "EVERY", 0.0)  # a line on every update
    rng = np.random.default_rng(0)
    stats = _fake_stats(rng, K=4)
    objective = MixtureObjective(stats, stats[0], parse_objective("tvd+fid"), np.full(10, 0.1))
    result = compute_front(objective, ("tvd", "fid"), scalarisations=3, budget=40, progress=None)
    lines = [s for s in capsys.readouterr().err.splitlines() if s.startswith("front: eval ")]
    assert len(result.values) >= 1 and lines
    assert lines[-1].startswith(f"front: eval {result.evaluations - 4 - 2}/120 (")  # minus the reference points
    assert any("scalarisation 1/3" in s for s in lines) and "scalarisation 3/3" in lines[-1]
    compute_front(objective, ("tvd", "fid"), scalarisations=3, budget=40, progress=False)
    assert "front:" not in capsys.readouterr().err  # --quiet style: nothing
