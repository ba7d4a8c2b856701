"""The asynchronous exchange (``distribution.exchange: async``): boundary cells through a Store.

Every rank publishes, after each generation, the centres of its *boundary cells* (its cells that
sit in a neighbourhood of another rank's cell) under one key per rank, and reads the newest copy
its neighbours have published, whatever generation that is. Nothing here waits for a neighbour's
current generation; the only waits are for a neighbour that has never published (once, at the
start) and, when ``distribution.max_staleness`` is set, for a copy that is too old.

Why a torch.distributed ``Store`` (TCPStore) and not non-blocking ``isend``/``irecv``:

* A store key holds the *latest* value: ``set`` overwrites, ``check`` is non-blocking, and a
  reader always gets the freshest copy. Point-to-point messages are matched one send to one
  receive, in order: a fast rank's sends would queue behind a slow receiver, which would read the
  *oldest* copy first and has to post one receive per send to drain them.
* Point-to-point ops belong to the process group; with gloo, a peer that dies mid-transfer
  fails the pending op, and NCCL needs both sides inside the same communicator call. The store
  is a plain key/value server, already running for the rendezvous (the ``--workers`` rank 0 or
  torchrun's agent store), so no home-made protocol and no extra port.
* The price: copies pass through the store's host (CPU, TCP), twice per byte. Boundary cells of
  the shipped networks are kilobytes to a few MB per generation; for large networks on GPUs
  the sync all_gather (NCCL) is the faster path.

Payloads are safetensors bytes (no pickle), with the generation and the cell ids inside, so one
``set`` publishes a consistent snapshot.
"""

from __future__ import annotations

import threading
import time

import torch
import torch.distributed as dist
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

PREFIX = "mustangs/exchange/"


class RankLost(RuntimeError):
    """Another rank stopped for good (no heartbeat, no restart) while this one waited for it."""


class Heartbeat:
    """Bumps ``beat/RANK`` in the store every ``every`` seconds from a daemon thread, on its own
    connection, so that the other ranks can tell a slow rank (it still beats, whatever it computes)
    from a dead one. A restarted process of the rank beats on the same key."""

    def __init__(self, store: dist.Store, rank: int, every: float = 1.0):
        self._store = dist.PrefixStore(PREFIX, store.clone())
        self._key, self._every = f"beat/{rank}", every
        self._stop = threading.Event()
        self._store.add(self._key, 1)
        self._thread = threading.Thread(target=self._run, name=f"mustangs-heartbeat-{rank}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._store.add(self._key, 1)
            except Exception:   # the store's host is gone: the waits will say so
                return

    def stop(self) -> None:
        """Stop beating (the process is leaving)."""
        self._stop.set()


class Watch:
    """Whether other ranks still beat: :meth:`check` raises :class:`RankLost` when a rank's heartbeat
    has not moved for ``lost_after`` seconds (counted from the first look, so a rank still starting
    up gets the same grace)."""

    def __init__(self, store: dist.Store, lost_after: float):
        self._store = dist.PrefixStore(PREFIX, store)
        self.lost_after = lost_after
        self._seen: dict[int, tuple[int, float]] = {}

    def check(self, rank: int, what: str) -> None:
        """Raise :class:`RankLost` if ``rank`` has shown no sign of life for ``lost_after`` seconds."""
        beats = int(self._store.add(f"beat/{rank}", 0))
        now = time.monotonic()
        last = self._seen.get(rank)
        if last is None or last[0] != beats:
            self._seen[rank] = (beats, now)
        elif now - last[1] > self.lost_after:
            raise RankLost(f"rank {rank} has shown no sign of life for {self.lost_after:.0f} s while this rank "
                           f"waited for {what}, and no restart replaced it; the checkpoints are kept: rerun the "
                           f"same command with --resume")


def owners(blocks: tuple[tuple[int, int], ...]) -> list[int]:
    """The rank that owns each cell, from the ranks' ``[start, stop)`` blocks."""
    out: list[int] = []
    for r, (start, stop) in enumerate(blocks):
        out += [r] * (stop - start)
    return out


class StoreExchange:
    """Publish this rank's boundary cells and read its neighbours' freshest copies.

    ``nbr`` is the grid's ``[N, S]`` neighbour table (global cell ids). Counters ``bytes``,
    ``seconds`` and ``waited`` (seconds spent waiting, see the module docstring) feed metrics.
    """

    def __init__(self, store: dist.Store, rank: int, blocks: tuple[tuple[int, int], ...], nbr: torch.Tensor,
                 poll: float = 0.02, watch: Watch | None = None):
        self.store = dist.PrefixStore(PREFIX, store)
        self.watch = watch
        self.rank, self.blocks, self.poll = rank, blocks, poll
        self.owner = owners(blocks)
        start, stop = blocks[rank]
        self.start = start
        table = nbr.tolist()
        N = len(self.owner)
        #: my cells that another rank's cell has in its neighbourhood (what I publish)
        self.boundary = sorted({j for c in range(N) if self.owner[c] != rank for j in table[c]
                                if self.owner[j] == rank})
        #: cells of other ranks in my cells' neighbourhoods, grouped by owner (what I read)
        need = sorted({j for c in range(start, stop) for j in table[c] if self.owner[j] != rank})
        self.sources: dict[int, list[int]] = {}
        for j in need:
            self.sources.setdefault(self.owner[j], []).append(j)
        self.bytes, self.seconds, self.waited = 0, 0.0, 0.0

    def publish(self, kind: str, generation: int, rows: dict[str, torch.Tensor]) -> None:
        """Publish the boundary rows of ``rows`` (cell axis first, this rank's cells in order)."""
        t0 = time.perf_counter()
        idx = torch.tensor([c - self.start for c in self.boundary], dtype=torch.long)
        payload = {k: t.detach().to("cpu").index_select(0, idx).contiguous() for k, t in rows.items()}
        payload["__generation__"] = torch.tensor([generation], dtype=torch.int64)
        payload["__cells__"] = torch.tensor(self.boundary, dtype=torch.int64)
        data = st_save(payload)
        self.store.set(f"{kind}/{self.rank}", data)
        self.bytes += len(data)
        self.seconds += time.perf_counter() - t0

    def _read(self, kind: str, source: int) -> dict[str, torch.Tensor]:
        key = f"{kind}/{source}"
        if not self.store.check([key]):     # never published yet (start of a run): wait once
            t0 = time.perf_counter()
            while not self.store.check([key]):
                self._check(source, f"its first {kind} copy")
                time.sleep(self.poll)
            self.waited += time.perf_counter() - t0
        return st_load(self.store.get(key))

    def gather(self, kind: str, generation: int, rows: dict[str, torch.Tensor], max_staleness: int | None = None
               ) -> tuple[dict[str, torch.Tensor], dict[int, int]]:
        """Whole-grid tensors ``[N, ...]``: this rank's rows and the freshest copies of the remote cells
        its neighbourhoods need (other rows are zero, and never read), plus ``{remote cell: lag}``
        where lag = ``generation`` minus the copy's generation (negative when the neighbour is ahead).

        With ``max_staleness`` it polls while a copy lags by more than that.
        """
        t0 = time.perf_counter()
        N = len(self.owner)
        out = {k: t.new_zeros(N, *t.shape[1:]) for k, t in rows.items()}
        start, stop = self.blocks[self.rank]
        for k, t in rows.items():
            out[k][start:stop] = t
        lags: dict[int, int] = {}
        for source, cells in self.sources.items():
            payload = self._read(kind, source)
            gen = int(payload["__generation__"][0])
            if max_staleness is not None and generation - gen > max_staleness:
                t1 = time.perf_counter()
                while generation - gen > max_staleness:
                    self._check(source, f"a {kind} copy at most {max_staleness} generations old")
                    time.sleep(self.poll)
                    payload = self._read(kind, source)
                    gen = int(payload["__generation__"][0])
                self.waited += time.perf_counter() - t1
            where = {int(c): i for i, c in enumerate(payload["__cells__"].tolist())}
            idx = torch.tensor([where[c] for c in cells], dtype=torch.long)
            dst = torch.tensor(cells, dtype=torch.long)
            for k in out:
                out[k].index_copy_(0, dst.to(out[k].device), payload[k].index_select(0, idx).to(out[k].device))
            self.bytes += sum(v.numel() * v.element_size() for v in payload.values())
            lags.update({c: generation - gen for c in cells})
        self.seconds += time.perf_counter() - t0
        return out, lags

    def mark_done(self, generation: int) -> None:
        """Say this rank has trained its last generation (idempotent: a restarted rank says it again)."""
        self.store.set(f"done/{self.rank}", str(generation))

    def wait_all_done(self) -> float:
        """Wait until every rank has marked done; returns the seconds waited.

        A slow rank may be hours behind, longer than any collective's timeout, hence the polling
        with no timeout; only a rank that stopped beating (see :class:`Watch`) ends the wait.
        """
        t0 = time.perf_counter()
        keys = [f"done/{r}" for r in range(len(self.blocks))]
        while not self.store.check(keys):
            for r, key in enumerate(keys):
                if not self.store.check([key]):
                    self._check(r, "the end of its last generation")
            time.sleep(max(self.poll, 0.1))
        return time.perf_counter() - t0

    def _check(self, rank: int, what: str) -> None:
        if self.watch is not None:
            self.watch.check(rank, what)

    def take(self) -> dict:
        """Bytes through the store, milliseconds in it and seconds waited since the last call, then reset."""
        out = {"bytes": self.bytes, "ms": round(self.seconds * 1000, 3), "waited_s": round(self.waited, 3)}
        self.bytes, self.seconds, self.waited = 0, 0.0, 0.0
        return out
