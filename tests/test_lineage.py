"""Lineages (issue 19): founders tracked per centre, slower-takeover keys, and their defaults."""

from __future__ import annotations

import json

import pytest
import torch

from mustangs.data.datasets import ArrayDataset
from trainer.coevolution import Coevolution
from trainer.config import load_train_config
from trainer.lineage import genome_distance


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py: small tests, one torch thread


def _data():
    g = torch.Generator().manual_seed(0)
    return ArrayDataset("fashion-mnist", torch.randint(0, 256, (200, 1, 28, 28), generator=g, dtype=torch.uint8),
                        torch.zeros(200, dtype=torch.long), 10)


def _run(over=(), gens=3):
    cfg = load_train_config(None, ["grid.height=3", "grid.width=3", "data.batch_size=8",
                                   "coevolution.batches_per_generation=2", *over])
    co = Coevolution(cfg, _data(), "cpu", engine="vmap")
    b = co.init_block()
    return b, [co.step(b, score=False) for _ in range(gens)]


def test_defaults_are_the_reference_and_lineages_follow_replacements():
    b1, r1 = _run()
    b2, r2 = _run(["coevolution.migration_every=1", "coevolution.foreign_replacement=1.0"])
    for k in b1.G.params:
        assert torch.equal(b1.G.params[k], b2.G.params[k])
    # a replaced centre inherits the lineage of the copy selected in its cell
    lineage = {tuple(c["cell"]): tuple(c["cell"]) for c in r1[0]}
    for gen in r1:
        before = dict(lineage)
        for c in gen:
            if c["replaced_g"]:
                lineage[tuple(c["cell"])] = before[tuple(c["selected_g"])]
        assert all(tuple(c["lineage_g"]) == lineage[tuple(c["cell"])] for c in gen)
    assert all(c["migrated"] for gen in r1 for c in gen)


def test_no_migration_generations_keep_every_cell_to_itself():
    _, recs = _run(["coevolution.migration_every=3"], gens=3)
    assert [recs[g][0]["migrated"] for g in range(3)] == [False, False, True]
    for gen in recs[:2]:
        assert all(tuple(c["selected_g"]) == tuple(c["cell"]) == tuple(c["lineage_g"]) for c in gen)


def test_foreign_replacement_zero_keeps_all_founders():
    b, recs = _run(["coevolution.foreign_replacement=0.0"], gens=3)
    assert sorted(b.lineage_g.tolist()) == list(range(9)) and sorted(b.lineage_d.tolist()) == list(range(9))
    assert any(c["replaced_g"] for gen in recs for c in gen)   # own-lineage copies still replace


def test_bad_values_are_refused():
    from mustangs.errors import ConfigError

    for bad in ("coevolution.migration_every=0", "coevolution.foreign_replacement=1.5"):
        with pytest.raises(ConfigError):
            load_train_config(None, [bad])


def test_genome_distance_is_zero_for_copies_and_relative():
    x = torch.randn(1, 50)
    assert genome_distance({"w": x.repeat(4, 1)}) == 0.0
    d = genome_distance({"w": torch.randn(64, 10000)})
    assert 1.3 < d < 1.5
    assert genome_distance({"w": 10 * torch.randn(64, 10000, generator=torch.Generator().manual_seed(1))}) == \
        pytest.approx(d, rel=0.05)


@pytest.mark.slow
def test_rings_run_records_lineages_resumes_and_draws_them(tmp_path):
    from trainer.cli import main

    over = ["threads=1", "data.dataset=rings", "network.arch=rings-mlp", "network.latent_dim=8", "grid.height=2",
            "grid.width=2", "data.sampling_ratio=0.02", "data.batch_size=50", "coevolution.batches_per_generation=4",
            "mixture.eval_samples=200", "eval.fid_samples=200", "coevolution.migration_every=2",
            "coevolution.foreign_replacement=0.5", "output.sample_every=null"]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("# test\n")
    pools = []
    for name, steps in (("a", [3]), ("b", [2, 3])):
        for i, gens in enumerate(steps):
            extra = ["--resume"] if i else []
            assert main(["train", str(cfg), "--out", str(tmp_path / name), "--quiet", *extra, *over,
                         f"coevolution.generations={gens}"]) == 0
        pools.append({p.name: p.read_bytes() for p in sorted((tmp_path / name / "pool").glob("*.safetensors"))})
    assert pools[0] == pools[1]
    lines = [json.loads(s) for s in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    a = [json.loads(s) for s in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [l["lineages"] for l in lines] == [l["lineages"] for l in a]
    assert all(1 <= l["lineages"]["distinct_g"] <= 4 and l["lineages"]["genome_distance_g"] >= 0 for l in lines)
    assert (tmp_path / "b" / "report" / "lineages.png").stat().st_size > 1000
    assert "Lineages" in (tmp_path / "b" / "report.html").read_text()


def test_crowding_blocks_a_majority_lineage_and_not_a_minority_one():
    from trainer.coevolution import crowded
    from trainer.grid import Grid

    nbr = Grid(3, 3).neighbour_table(True)                   # [9, 5]; cell 4 = (1, 1): cells 1, 3, 4, 5, 7
    assert sorted(nbr[4].tolist()) == [1, 3, 4, 5, 7]
    lineage = torch.arange(9)
    lineage[[1, 3, 7]] = 7                                   # lineage 7 holds 3 of the 5 centres around cell 4
    cells = torch.tensor([4, 4, 4, 3])
    copy = torch.tensor([7, 5, 4, 7])     # majority lineage, minority lineage, the centre's own, own (cell 3 is 7)
    got = crowded(lineage, nbr[cells], copy, lineage[cells]).tolist()
    assert got == [True, False, False, False]
    lineage[7] = 8                                           # now 2 of 5: no longer a majority
    assert crowded(lineage, nbr[cells], copy, lineage[cells]).tolist() == [False] * 4
    nbr22 = Grid(2, 2).neighbour_table(True)                 # 3 distinct cells: 2 of 3 is a majority
    lin22 = torch.tensor([0, 1, 1, 3])
    assert crowded(lin22, nbr22[[0]], torch.tensor([1]), lin22[[0]]).tolist() == [True]


def test_crowding_blocks_in_a_run_and_records_it():
    _, r0 = _run(["coevolution.replacement=elitist"], gens=6)
    _, r1 = _run(["coevolution.replacement=crowding"], gens=6)
    assert not any(c["crowded_g"] or c["crowded_d"] for gen in r0 for c in gen)
    blocked = [(c, k) for gen in r1 for c in gen for k in "gd" if c[f"crowded_{k}"]]
    assert blocked and all(not c[f"replaced_{k}"] for c, k in blocked)


def test_replacement_default_is_elitist_and_draws_nothing_extra():
    b1, _ = _run()
    b2, _ = _run(["coevolution.replacement=elitist"])
    for k in b1.G.params:
        assert torch.equal(b1.G.params[k], b2.G.params[k])
    assert all(torch.equal(g1.get_state(), g2.get_state()) for g1, g2 in zip(b1.rng_train, b2.rng_train))
    from mustangs.errors import ConfigError

    with pytest.raises(ConfigError):
        load_train_config(None, ["coevolution.replacement=takeover"])


def test_dry_run_shows_the_issue_19_keys(tmp_path, capsys):
    from trainer.cli import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("# test\n")
    assert main(["train", str(cfg), "--dry-run", "coevolution.replacement=crowding", "output.pool_members=all"]) == 0
    text = capsys.readouterr()
    text = text.out + text.err
    assert "replacement: crowding" in text and "pool_members: all" in text and "snapshot_every: 10" in text
