"""``distribution.exchange: async`` without a process group: ranks meet only in the job's TCPStore.

Why no process group: a gloo or NCCL group is fixed at creation, so a rank that dies can never
rejoin it, and every collective of the survivors then fails. An async rank needs its neighbours
only through their freshest published copies (:class:`trainer.exchange.StoreExchange`), so the
few moments when ranks must meet — set-up, the end of the run — go through the same store:
each rank sets its part under a key and reads the others'. A rank restarted alone (torchrun with
one agent per rank and ``--max-restarts``, or ``trainer train --workers N --max-restarts K``)
connects to the store again, resumes from its own checkpoint and trains against whatever its
neighbours last published, while they never stopped.

Liveness: every process beats a counter in the store from a thread (:class:`trainer.exchange.Heartbeat`);
a rank that waits for another gives up with a one-line :class:`~trainer.exchange.RankLost` once that
rank's beat has stood still for ``distribution.lost_after`` seconds (dead, and not restarted in time),
instead of waiting forever.

Incarnations: every process of a rank bumps ``incarnation/RANK`` when it connects. The first
incarnation of every rank takes part in the set-up barriers; a later one (a restart) skips
them, and marks itself ``rejoined/RANK`` so that ranks still waiting at a set-up barrier for its
dead predecessor go on. The end-of-run gathers carry the incarnation, so a reader never takes a
dead predecessor's part for the current one.

Payloads are safetensors bytes (tensors) and UTF-8 JSON (records): no pickle crosses processes.
"""

from __future__ import annotations

import json
import time

import torch
import torch.distributed as dist
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from trainer.distributed import Workers, _pack_stats, _unpack_stats, split_cells
from trainer.exchange import Heartbeat, RankLost, Watch  # noqa: F401 - RankLost: what a lost rank raises here
from trainer.world import World

PREFIX = "mustangs/run/"


def _to_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return st_save({k: t.detach().to("cpu").contiguous().clone() for k, t in tensors.items()})


class StoreWorld(World):
    """The ranks of an async run; each owns a contiguous block of cells and meets the others in ``store``.

    Between :meth:`start` and :meth:`finish` (*live*) no rank waits for another's current generation.
    Before and after, ``gather_*`` and :meth:`barrier` are store-based all-gathers in program order.
    """

    asynchronous = True

    def __init__(self, workers: Workers, nbr: torch.Tensor, max_staleness: int | None, store: dist.Store,
                 *, poll: float = 0.02, lost_after: float = 120.0):
        from trainer.exchange import StoreExchange

        self.workers, self.nbr, self.max_staleness = workers, nbr, max_staleness
        self.rank, self.size = workers.rank, workers.world_size
        self.raw_store = store
        self.store = dist.PrefixStore(PREFIX, store)
        self.poll = poll
        #: 1 for the rank's first process, 2 for its first restart, ...
        self.incarnation = int(self.store.add(f"incarnation/{self.rank}", 1))
        self.rejoining = self.incarnation > 1
        if self.rejoining:   # a predecessor died: free any set-up barrier that still waits for it
            self.store.set(f"rejoined/{self.rank}", str(self.incarnation))
        self.heartbeat = Heartbeat(store, self.rank)
        self.watch = Watch(store, lost_after)
        self.exchange = StoreExchange(store, self.rank, workers.blocks, nbr, poll=poll, watch=self.watch)
        self.live = False
        self.generation = 0
        self.lags: dict[int, int] = {}
        self.lineages: tuple[torch.Tensor, torch.Tensor] | None = None
        self._phase, self._calls = "setup", 0
        self._bytes, self._seconds = 0, 0.0

    # ------------------------------------------------------------------ layout
    def cells(self, num_cells: int) -> range:
        return range(*split_cells(num_cells, self.size)[self.rank])

    # ------------------------------------------------------------------ meeting points (not live)
    def _next_key(self) -> str:
        key = f"{self._phase}/{self._calls}"
        self._calls += 1
        return key

    def _current_incarnation(self, rank: int) -> int:
        return int(self.store.add(f"incarnation/{rank}", 0))

    def _all_gather_bytes(self, data: bytes) -> list[bytes]:
        """Every rank's ``data`` of this meeting point, in rank order (this rank's included)."""
        if self.live:
            raise RuntimeError("a store all-gather while live would wait for other ranks' current generation")
        if self._phase == "setup" and self.rejoining:
            raise RuntimeError("a restarted rank cannot take part in set-up gathers (its group is already live)")
        t0 = time.perf_counter()
        key = self._next_key()
        header = f"{self.incarnation}\n".encode()
        self.store.set(f"{key}/{self.rank}", header + data)
        parts: list[bytes] = []
        for r in range(self.size):
            if r == self.rank:
                parts.append(data)
                continue
            parts.append(self._wait_part(key, r))
        self._bytes += len(data) * (self.size - 1)
        self._seconds += time.perf_counter() - t0
        return parts

    def _wait_part(self, key: str, r: int) -> bytes:
        """Rank ``r``'s part of meeting point ``key``, from its current incarnation (while ``r`` lives)."""
        name = f"{key}/{r}"
        while True:
            if self.store.check([name]):
                raw = self.store.get(name)
                head, _, body = raw.partition(b"\n")
                if int(head) == self._current_incarnation(r):
                    return body
            elif self._phase == "setup" and self.store.check([f"rejoined/{r}"]):
                return b""   # its first process died during set-up; its restart went live without us
            self.watch.check(r, f"its part of {key}")
            time.sleep(self.poll)

    def barrier(self) -> None:
        """Set-up and end of the run: wait for every rank (a restarted rank skips set-up barriers). Live: no-op."""
        if self.live or (self._phase == "setup" and self.rejoining):
            return
        self._all_gather_bytes(b"")

    def gather_tensors(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        parts = self._all_gather_bytes(_to_bytes(tensors))
        loaded = [st_load(p) if r != self.rank else None for r, p in enumerate(parts)]
        out = {}
        for k, t in tensors.items():
            rows = [t.detach() if r == self.rank else loaded[r][k].to(t.device) for r in range(self.size)]
            out[k] = torch.cat(rows)
        return out

    def gather_objects(self, items):
        if self.live:
            return list(items)
        merged: list = []
        for part in self._all_gather_bytes(json.dumps(list(items)).encode()):
            merged.extend(json.loads(part.decode()))
        return merged

    def gather_state(self, state):
        from trainer.batched import NetState

        return NetState.from_tensors(self.gather_tensors(state.tensors()))

    def gather_weights(self, state):
        if self.live:
            raise RuntimeError("live neighbour adversaries need distribution.exchange=sync")
        from trainer.batched import NetState

        params = self.gather_tensors(state.params)
        buffers = self.gather_tensors(state.buffers)
        step = self.gather_tensors({"step": state.step})["step"]
        return NetState(params, buffers, {}, {}, step)

    # ------------------------------------------------------------------ live
    def start(self, block) -> None:
        """Publish the block's centres; the first processes wait until every rank has; go live."""
        self.published(block)
        self.barrier()
        self.live = True

    def published(self, block) -> None:
        """Publish the block's centres (after each generation); its generation becomes the clock."""
        self.generation = block.generation
        self.exchange.publish("centres", block.generation, self._centre_rows(block.G, block.D, block))

    @staticmethod
    def _centre_rows(G, D, block) -> dict:
        """The centres and their founder lineages, in one payload (a neighbour's lineage always
        belongs to the copy of its weights that was read)."""
        return {**{f"G.{k}": t for k, t in G.tensors().items()}, **{f"D.{k}": t for k, t in D.tensors().items()},
                "L.g": block.lineage_g, "L.d": block.lineage_d}

    def finish(self) -> float:
        """This rank has trained its last generation: wait (no timeout) until every rank has, then meet."""
        self.exchange.mark_done(self.generation)
        waited = self.exchange.wait_all_done()
        self.live = False
        self._phase, self._calls = "final", 0
        self.barrier()
        return waited

    def staleness(self, cells: list[int]) -> list[int]:
        """For one neighbourhood: how many generations old each member's copy was (0: this rank's own)."""
        return [int(self.lags.get(int(c), 0)) for c in cells]

    def gather_centres(self, G, D, block=None):
        if not self.live:
            return self.gather_state(G), self.gather_state(D)
        from trainer.batched import NetState

        rows = self._centre_rows(G, D, block) if block is not None else \
            {**{f"G.{k}": t for k, t in G.tensors().items()}, **{f"D.{k}": t for k, t in D.tensors().items()}}
        full, self.lags = self.exchange.gather("centres", self.generation, rows, self.max_staleness)
        self.lineages = (full["L.g"], full["L.d"]) if "L.g" in full else None
        part = lambda p: NetState.from_tensors({k[2:]: t for k, t in full.items() if k.startswith(p)})  # noqa: E731
        return part("G."), part("D.")

    def gather_lineages(self, lineage_g, lineage_d):
        if not self.live:
            return super().gather_lineages(lineage_g, lineage_d)
        if self.lineages is None:
            raise RuntimeError("gather_centres(..., block) must come before gather_lineages in an async run")
        return self.lineages

    def lineage_weights(self, state):
        """Live, a rank measures the genome distance over its own cells (no rank waits for another)."""
        return state if self.live else self.gather_weights(state)

    def gather_stats(self, stats):
        known = next(((s.mu.shape[0], s.hist.shape[0]) for s in stats if s is not None), None)
        if self.live:
            if known is None:
                return [None] * len(self.nbr)
            dim, classes = known
            rows = {"stats": torch.stack([_pack_stats(s, dim, classes) for s in stats])}
            self.exchange.publish("stats", self.generation + 1, rows)   # scored after this generation's training
            full, _ = self.exchange.gather("stats", self.generation + 1, rows)
            return [_unpack_stats(r, dim, classes) for r in full["stats"]]
        shapes = self.gather_objects([list(known) if known else None])
        known = next((tuple(s) for s in shapes if s), None)
        if known is None:
            return [None] * sum(stop - start for start, stop in self.workers.blocks)
        dim, classes = known
        rows = torch.stack([_pack_stats(s, dim, classes) for s in stats])
        return [_unpack_stats(r, dim, classes) for r in self.gather_tensors({"s": rows})["s"]]

    def take_comm_stats(self) -> dict:
        """Bytes and milliseconds of the meeting points, and the live exchange's counters, since the last call."""
        out = {"bytes": self._bytes, "ms": round(self._seconds * 1000, 3), "collectives": 0,
               "store": self.exchange.take()}
        self._bytes, self._seconds = 0, 0.0
        return out


def join_store(rank: int | None, world_size: int | None, init_method: str | None) -> tuple[int, int, dist.Store]:
    """This rank's (rank, world size, store) for an async run, without a process group.

    ``trainer train --workers N`` passes ``tcp://HOST:PORT`` of the store its launcher hosts;
    under torchrun everything comes from the environment, and the store is the agent's
    (``TORCHELASTIC_USE_AGENT_STORE``), which outlives this rank, so a restarted rank finds the
    run's keys there. The rank's GPU is chosen as for a process group.
    """
    import os

    from trainer.distributed import select_device

    if init_method is not None:
        host, _, port = init_method.removeprefix("tcp://").rpartition(":")
        store = connect_store(host, int(port))
    else:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            store = connect_store(host, port)
        else:   # a launcher without an agent store: rank 0 hosts it (and losing rank 0 ends the run)
            from datetime import timedelta

            store = dist.TCPStore(host, port, world_size, rank == 0, timedelta(minutes=10))
    select_device(rank)
    return rank, world_size, store


def connect_store(host: str, port: int, *, timeout_s: float = 600.0) -> dist.Store:
    """A client of the job's TCPStore (torchrun's agent store, or the ``--workers`` launcher's)."""
    from datetime import timedelta

    return dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=timeout_s))
