"""Worker layout and the collectives of the distributed World, with 2 gloo ranks on 127.0.0.1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from mustangs.errors import UserError
from trainer.distributed import free_port, split_cells


def test_blocks_are_balanced_and_contiguous():
    assert split_cells(9, 2) == ((0, 5), (5, 9))
    assert split_cells(4, 4) == ((0, 1), (1, 2), (2, 3), (3, 4))
    assert split_cells(25, 3) == ((0, 9), (9, 17), (17, 25))
    with pytest.raises(UserError, match="use --workers 4 or fewer"):
        split_cells(4, 5)


def _worker(rank: int, port: int, out: dict):
    import torch.distributed as dist

    from mustangs.judge.metrics import FeatureStats
    from trainer.batched import NetState
    from trainer.distributed import Workers, make_world

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        workers = Workers(rank, 2, split_cells(3, 2))
        world = make_world(workers)
        cells = list(world.cells(3))
        state = NetState.from_modules([torch.nn.Linear(2, 2) for _ in cells])
        for i, c in enumerate(cells):
            state.params["weight"][i].fill_(c)
        G, _ = world.gather_centres(state, state)
        objs = world.gather_objects([{"cell": c, "x": 0.1 * c} for c in cells])
        stats = [FeatureStats(10 + c, np.full(3, c, float), np.eye(3) * c, np.ones(2) / 2, np.ones(2) / 2, -0.5 * c)
                 for c in cells]
        stats[0] = None if rank == 1 else stats[0]
        gathered = world.gather_stats(stats)
        out[rank] = (G.params["weight"][:, 0, 0].tolist(), objs,
                     [None if s is None else (s.n, s.mu.tolist(), s.mean_plogp) for s in gathered])
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gathers_over_two_ranks():
    manager = mp.Manager()
    out = manager.dict()
    mp.start_processes(_worker, args=(free_port(), out), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        weights, objs, stats = out[rank]
        assert weights == [0.0, 1.0, 2.0]
        assert [o["cell"] for o in objs] == [0, 1, 2] and objs[2]["x"] == pytest.approx(0.2)
        assert stats[0] == (10, [0.0] * 3, 0.0) and stats[1] == (11, [1.0] * 3, -0.5) and stats[2] is None
