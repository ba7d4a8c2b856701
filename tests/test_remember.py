"""A pool that remembers (issue 19, item 3): ``output.pool_members`` and ``output.snapshot_every``."""

from __future__ import annotations

import json

import pytest
import torch

from mustangs.errors import ConfigError
from mustangs.pool.format import read_pool
from trainer.config import load_train_config
from trainer.remember import PoolMemory, split_tensors


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py: small tests, one torch thread


def _records(fids, lineages):
    cells = [[0, 0], [0, 1], [1, 0], [1, 1]]
    return [{"cell": c, "lineage_g": l, **({"scores": {"fid_cls200": f}} if f is not None else {})}
            for c, l, f in zip(cells, lineages, fids)]


def _params(value):
    return {"w": torch.full((4, 3), float(value)) + torch.arange(4.0).view(4, 1)}, {"b": torch.zeros(4, 1)}


def test_lineage_best_keeps_the_best_score_of_each_lineage_and_snapshots_every_k():
    mem = PoolMemory("all", snapshot_every=2)
    own = [[0, 0], [0, 1], [1, 0], [1, 1]]
    mem.observe(1, _records([5.0, 4.0, 3.0, 9.0], own), *_params(1))
    # generation 2: cell (1, 1) is now of lineage (0, 0); better for (0, 0) at cell (1, 1) only
    mem.observe(2, _records([6.0, 4.5, None, 1.0], [[0, 0], [0, 1], [1, 0], [0, 0]]), *_params(2))
    best = {m.id: m for m in mem.members() if m.role == "lineage-best"}
    assert set(best) == {"best-r0c0", "best-r0c1", "best-r1c0", "best-r1c1"}
    b = best["best-r0c0"]
    assert (b.generation, b.cell, b.lineage, b.score) == (2, [1, 1], [0, 0], {"fid_cls200": 1.0})
    assert torch.equal(b.weights["w"], torch.full((3,), 5.0)) and torch.equal(b.weights["b"], torch.zeros(1))
    assert best["best-r0c1"].generation == 1 and best["best-r1c0"].generation == 1   # unscored gen 2 skipped
    snaps = [m for m in mem.members() if m.role == "snapshot"]
    assert [(m.generation, m.cell) for m in snaps] == [(2, c) for c in own]
    # checkpoint round trip
    again = PoolMemory("all", snapshot_every=2)
    grid, rem = split_tensors({"lr_g": torch.zeros(4), **mem.tensors()})
    assert set(grid) == {"lr_g"}
    again.restore(json.loads(json.dumps(mem.meta())), rem)
    assert again.meta() == mem.meta()
    assert all(torch.equal(again.items[k].weights[n], t) for k, m in mem.items.items() for n, t in m.weights.items())
    # a run resumed with fewer members drops what it no longer keeps
    fewer = PoolMemory("centres+lineage-best", snapshot_every=2)
    fewer.restore(mem.meta(), rem)
    assert {m.role for m in fewer.members()} == {"lineage-best"}


def test_centres_remembers_nothing():
    mem = PoolMemory("centres")
    mem.observe(1, _records([1.0] * 4, [[0, 0]] * 4), *_params(0))
    assert not mem.enabled and len(mem) == 0 and mem.tensors() == {}


def test_config_refuses_too_many_snapshots_and_async():
    cfg = load_train_config(None, ["output.pool_members=all", "output.snapshot_every=5"])
    assert cfg.output.pool_members == "all"
    with pytest.raises(ConfigError, match="snapshot_every"):
        load_train_config(None, ["output.pool_members=centres+snapshots", "output.snapshot_every=1",
                                 "coevolution.generations=100000", "grid.height=10", "grid.width=10"])
    with pytest.raises(ConfigError, match="distribution.exchange=sync"):
        load_train_config(None, ["output.pool_members=all", "distribution.exchange=async"])
    with pytest.raises(ConfigError):
        load_train_config(None, ["output.pool_members=everything"])


RINGS = ["threads=1", "data.dataset=rings", "network.arch=rings-mlp", "network.latent_dim=8", "grid.height=2",
         "grid.width=2", "data.sampling_ratio=0.02", "data.batch_size=50", "coevolution.batches_per_generation=4",
         "mixture.eval_samples=200", "eval.fid_samples=200", "eval.diversity_samples=null",
         "output.sample_every=null", "output.report=false", "output.snapshot_every=2"]


def _train(tmp_path, name, members, gens, *flags):
    from trainer.cli import main

    cfg = tmp_path / "cfg.yaml"
    if not cfg.exists():
        cfg.write_text("# test\n")
    return main(["train", str(cfg), "--out", str(tmp_path / name), "--quiet", *flags, *RINGS,
                 f"output.pool_members={members}", f"coevolution.generations={gens}"])


def _members(pool):
    return {e.id: (tuple(e.origin["roles"]), tuple(e.origin["lineage"]), e.origin["generation"],
                   tuple(e.origin["cell"]), e.sha256) for e in pool.entries}


@pytest.mark.slow
@pytest.mark.parametrize("members", ["centres", "centres+lineage-best", "centres+snapshots"])
def test_rings_pool_lists_the_members_of_each_option(tmp_path, members):
    assert _train(tmp_path, "run", members, 4) == 0
    pool = read_pool(tmp_path / "run" / "pool")
    got = _members(pool)
    centres = [m for m in got.values() if "centre" in m[0]]
    assert len(centres) == len({m[4] for m in centres}) and all(m[2] == 4 for m in centres)
    ids = set(got)
    if members == "centres":
        assert all(i.startswith("r") for i in ids)
    roles = {r for m in got.values() for r in m[0]}
    if members == "centres+lineage-best":
        # each founder lineage that survived has a best (written once, or named a role of an equal centre)
        lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        founders = {tuple(c["lineage_g"]) for line in lines for c in line["cells"]}
        assert "lineage-best" in roles and "snapshot" not in roles
        best = [m for i, m in got.items() if "lineage-best" in m[0]]
        assert {m[1] for m in best} <= founders and len(best) >= 1
        for e in pool.entries:
            if e.id.startswith("best-"):
                assert "score" in e.origin and e.origin["lineage"] == [int(e.id[6]), int(e.id[8])]
    if members == "centres+snapshots":
        snaps = [m for m in got.values() if "snapshot" in m[0]]
        assert "lineage-best" not in roles
        written = {(m[2], m[3]) for i, m in got.items() if i.startswith("snap-")}
        assert written <= {(g, (r, c)) for g in (2, 4) for r in (0, 1) for c in (0, 1)}
        assert any(m[2] == 2 for m in snaps)


@pytest.mark.slow
def test_all_members_resume_and_ensembler_optimize(tmp_path):
    from ensembler.cli import main as ensembler

    assert _train(tmp_path, "a", "all", 4) == 0
    assert _train(tmp_path, "b", "all", 3) == 0
    assert _train(tmp_path, "b", "all", 4, "--resume") == 0
    a, b = read_pool(tmp_path / "a" / "pool"), read_pool(tmp_path / "b" / "pool")
    assert _members(a) == _members(b)
    roles = {r for m in _members(a).values() for r in m[0]}
    assert roles == {"centre", "lineage-best", "snapshot"}
    assert len(a) > 4
    out = tmp_path / "e.json"
    assert ensembler(["optimize", str(tmp_path / "a" / "pool"), "--objective", "tvd", "--method", "es",
                      "--budget", "20", "--samples", "200", "--verify-samples", "0", "--diversity-samples", "0",
                      "--out", str(out)]) == 0
    assert json.loads(out.read_text())["members"]
    # merging with an old-style pool (no lineage or roles) still works
    old = tmp_path / "old"
    assert _train(tmp_path, "old", "centres", 2) == 0
    manifest = json.loads((old / "pool" / "manifest.json").read_text())
    for g in manifest["generators"]:
        g["origin"].pop("lineage"), g["origin"].pop("roles")
    (old / "pool" / "manifest.json").write_text(json.dumps(manifest))
    assert "lineage" not in read_pool(old / "pool").entries[0].origin
    assert ensembler(["optimize", str(tmp_path / "a" / "pool"), str(old / "pool"), "--objective", "tvd",
                      "--method", "es", "--budget", "20", "--samples", "200", "--verify-samples", "0",
                      "--diversity-samples", "0", "--out", str(tmp_path / "m.json")]) == 0


def test_a_damaged_remembered_list_is_one_line():
    from mustangs.errors import UserError

    mem = PoolMemory("all", snapshot_every=1)
    for bad in ([{"id": "x", "role": "centre", "lineage": [0, 0], "cell": [0, 0], "generation": 1}],
                [{"id": "x", "role": "snapshot"}], {"id": "x"},
                [{"id": "../snap-g000001-r0c0", "role": "snapshot", "lineage": [0, 0], "cell": [0, 0], "generation": 1}],
                [{"id": "x", "role": "snapshot", "lineage": [0, 0], "cell": [0, 0], "generation": 1}]):
        with pytest.raises(UserError):
            mem.restore(bad, {})
