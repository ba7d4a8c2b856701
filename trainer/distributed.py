"""Workers as torch.distributed ranks: who owns which cells, and the neighbour exchange.

One process (no torch.distributed) is the degenerate case: it owns every cell and the
exchange is the identity. ``trainer train --workers N`` spawns N ranks on this machine;
under ``torchrun`` the ranks come from the environment (RANK, WORLD_SIZE, MASTER_ADDR…).
Cells, not ranks, own random streams, so the split never changes the result.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mustangs.errors import UserError
from trainer.world import World


@dataclass(frozen=True)
class Workers:
    """This process's place among the workers and the cells it owns."""

    rank: int
    world_size: int
    blocks: tuple[tuple[int, int], ...]  # per rank: [start, stop) of its cells

    @property
    def cells(self) -> range:
        """The cell indices this rank trains."""
        start, stop = self.blocks[self.rank]
        return range(start, stop)

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes the run folder."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def split_cells(num_cells: int, world_size: int) -> tuple[tuple[int, int], ...]:
    """Balanced contiguous blocks of cells, one per rank (sizes differ by at most one)."""
    if world_size < 1:
        raise UserError(f"--workers must be >= 1, got {world_size}")
    if world_size > num_cells:
        raise UserError(f"{world_size} workers for a grid of {num_cells} cells: every worker needs at least one "
                        f"cell; use --workers {num_cells} or fewer, or a bigger grid")
    base, extra = divmod(num_cells, world_size)
    blocks, start = [], 0
    for r in range(world_size):
        stop = start + base + (1 if r < extra else 0)
        blocks.append((start, stop))
        start = stop
    return tuple(blocks)


def single_process(num_cells: int) -> Workers:
    """The one-process layout: rank 0 owns every cell."""
    return Workers(0, 1, ((0, num_cells),))


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for single-machine rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CommStats:
    """Bytes this rank sent into collectives and seconds spent in them (for metrics and benchmarks)."""

    bytes_sent = 0
    seconds = 0.0
    calls = 0

    @classmethod
    def take(cls) -> dict:
        """The totals since the last call, then reset."""
        out = {"bytes": cls.bytes_sent, "ms": round(cls.seconds * 1000, 3), "collectives": cls.calls}
        cls.bytes_sent, cls.seconds, cls.calls = 0, 0.0, 0
        return out


def _all_gather(out: list[torch.Tensor], tensor: torch.Tensor) -> None:
    import time

    t0 = time.perf_counter()
    dist.all_gather(out, tensor)
    CommStats.seconds += time.perf_counter() - t0
    CommStats.bytes_sent += tensor.numel() * tensor.element_size()
    CommStats.calls += 1


def gather_rows(local: torch.Tensor, workers: Workers) -> torch.Tensor:
    """All ranks' rows, in cell order: ``[cells_of_this_rank, ...]`` → ``[all_cells, ...]``.

    Blocks may differ in size by one, so each rank pads to the largest block before
    ``all_gather`` and the padding is dropped afterwards.
    """
    if not workers.distributed:
        return local
    sizes = [stop - start for start, stop in workers.blocks]
    biggest = max(sizes)
    padded = local
    if local.shape[0] < biggest:
        pad = local.new_zeros(biggest - local.shape[0], *local.shape[1:])
        padded = torch.cat([local, pad])
    out = [torch.empty_like(padded) for _ in sizes]
    _all_gather(out, padded.contiguous())
    return torch.cat([o[:n] for o, n in zip(out, sizes)])


def _comm_device() -> torch.device:
    """Where collective buffers must live: the rank's GPU under NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_tensor_rows(local: torch.Tensor, workers: Workers) -> torch.Tensor:
    """:func:`gather_rows` for a tensor on any device (moved to the backend's device and back)."""
    if not workers.distributed:
        return local
    dev = _comm_device()
    return gather_rows(local.to(dev), workers).to(local.device)


def gather_dict(tensors: dict[str, torch.Tensor], workers: Workers) -> dict[str, torch.Tensor]:
    """:func:`gather_tensor_rows` of every tensor of ``tensors``, in the same key order on every rank.

    The collectives run in sorted key order: a rank restored from a checkpoint holds its tensors
    in the file's order, a fresh one in the network's, and an async run can mix both (one rank
    resumes, another starts over); gathering in dict order would pair different tensors (a gloo
    abort). The result keeps ``tensors``' own order.
    """
    gathered = {k: gather_tensor_rows(tensors[k], workers) for k in sorted(tensors)}
    return {k: gathered[k] for k in tensors}


def gather_json(items: list, workers: Workers) -> list:
    """Concatenate every rank's list of JSON-able items in rank (= cell) order.

    Sent as UTF-8 JSON in a byte tensor: no pickle crosses process boundaries.
    """
    if not workers.distributed:
        return items
    import json

    dev = _comm_device()
    payload = torch.frombuffer(bytearray(json.dumps(items).encode()), dtype=torch.uint8).to(dev)
    sizes = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(workers.world_size)]
    _all_gather(sizes, torch.tensor([payload.numel()], dtype=torch.int64, device=dev))
    biggest = int(max(s.item() for s in sizes))
    padded = torch.zeros(biggest, dtype=torch.uint8, device=dev)
    padded[:payload.numel()] = payload
    out = [torch.empty_like(padded) for _ in sizes]
    _all_gather(out, padded)
    merged: list = []
    for buf, n in zip(out, sizes):
        merged.extend(json.loads(bytes(buf[:int(n.item())].cpu().numpy()).decode()))
    return merged


def select_device(rank: int | None) -> bool:
    """Give this rank its GPU (``LOCAL_RANK`` modulo the GPUs) when there are GPUs; whether it got one."""
    use_cuda = torch.cuda.is_available() and os.environ.get("MUSTANGS_DEVICE", "auto") != "cpu"
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", rank or 0))
        torch.cuda.set_device(local % torch.cuda.device_count())
    return use_cuda


def init_process_group(*, rank: int | None = None, world_size: int | None = None,
                       init_method: str | None = None) -> str:
    """Join the process group (gloo on CPU, NCCL with one GPU per rank); returns the backend.

    Under torchrun everything comes from the environment (``env://``); ``trainer train --workers N``
    passes ``rank``, ``world_size`` and a ``tcp://127.0.0.1:PORT`` init method.
    """
    from datetime import timedelta

    backend = "nccl" if select_device(rank) else "gloo"
    kwargs = {"backend": backend, "timeout": timedelta(minutes=10)}
    if init_method is not None:
        kwargs.update(init_method=init_method, rank=rank, world_size=world_size)
    elif os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        kwargs.update(_attempt_store(kwargs["timeout"]))
    dist.init_process_group(**kwargs)
    return backend


def _attempt_store(timeout) -> dict:
    """Rendezvous keys of this torchrun attempt only.

    torchrun's agent keeps one store for the whole job, so after a restart the new ranks
    would read the dead ranks' addresses (connection refused, or a hang). Every rank bumps a
    shared counter on joining; as each attempt has exactly WORLD_SIZE ranks, the counter
    names the attempt the same way on every node, even where agents count restarts
    differently (a membership change is not a restart for the healthy nodes).
    """
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                          is_master=False, timeout=timeout)
    attempt = (store.add("mustangs/joined", 1) - 1) // world_size
    return {"store": dist.PrefixStore(f"mustangs/attempt_{attempt}", store), "rank": rank,
            "world_size": world_size}


def layout_from_group(num_cells: int) -> Workers:
    """The worker layout of the current process group (or the single-process layout)."""
    if not dist.is_initialized():
        return single_process(num_cells)
    size = dist.get_world_size()
    return Workers(dist.get_rank(), size, split_cells(num_cells, size))


def _pack_stats(stats, dim: int, classes: int) -> torch.Tensor:
    """FeatureStats (or None) → one float64 row: [present, n, mean_plogp, mu, second, hist, mean_probs]."""
    width = 3 + dim + dim * dim + 2 * classes
    row = torch.zeros(width, dtype=torch.float64)
    if stats is None:
        return row
    parts = [torch.tensor([1.0, float(stats.n), float(stats.mean_plogp)], dtype=torch.float64)]
    for arr in (stats.mu, stats.second, stats.hist, stats.mean_probs):
        parts.append(torch.as_tensor(arr, dtype=torch.float64).reshape(-1))
    return torch.cat(parts)


def _unpack_stats(row: torch.Tensor, dim: int, classes: int):
    from mustangs.judge.metrics import FeatureStats

    if row[0].item() == 0:
        return None
    a = row.numpy()
    i = 3
    mu = a[i:i + dim]
    i += dim
    second = a[i:i + dim * dim].reshape(dim, dim)
    i += dim * dim
    hist = a[i:i + classes]
    i += classes
    mean_probs = a[i:i + classes]
    return FeatureStats(int(a[1]), mu.copy(), second.copy(), hist.copy(), mean_probs.copy(), float(a[2]))


def make_world(workers: Workers) -> "DistWorld":
    """A :class:`trainer.world.World` whose gathers are torch.distributed collectives (sync exchange).

    Async runs use :class:`trainer.store_world.StoreWorld` instead (no process group).
    """
    return DistWorld(workers)


class DistWorld(World):
    """The ranks of one process group; each owns a contiguous block of cells."""

    def __init__(self, workers: Workers):
        self.workers = workers
        self.rank, self.size = workers.rank, workers.world_size

    def cells(self, num_cells: int) -> range:
        return range(*split_cells(num_cells, self.size)[self.rank])

    def gather_state(self, state):
        from trainer.batched import NetState

        return NetState.from_tensors(gather_dict(state.tensors(), self.workers))

    def gather_weights(self, state):
        """Params and buffers of every cell (no Adam moments): a third of the bytes of a full state."""
        from trainer.batched import NetState

        workers = self.workers
        params = gather_dict(state.params, workers)
        buffers = gather_dict(state.buffers, workers)
        step = gather_tensor_rows(state.step, workers)
        return NetState(params, buffers, {}, {}, step)

    def gather_centres(self, G, D, block=None):
        return self.gather_state(G), self.gather_state(D)

    def gather_tensors(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every per-cell tensor (cell axis first) of all ranks, in cell order."""
        return gather_dict(tensors, self.workers)

    def gather_stats(self, stats):
        workers = self.workers
        shape = next(((s.mu.shape[0], s.hist.shape[0]) for s in stats if s is not None), None)
        shapes = gather_json([list(shape) if shape else None], workers)
        known = next((s for s in shapes if s), None)
        if known is None:
            return [None] * sum(stop - start for start, stop in workers.blocks)
        dim, classes = known
        rows = torch.stack([_pack_stats(s, dim, classes) for s in stats]) if stats else \
            torch.zeros(0, 3 + dim + dim * dim + 2 * classes, dtype=torch.float64)
        return [_unpack_stats(r, dim, classes) for r in gather_tensor_rows(rows, workers)]

    def gather_objects(self, items):
        return gather_json(list(items), self.workers)

    def barrier(self) -> None:
        dist.barrier()

    def take_comm_stats(self) -> dict:
        """Bytes/milliseconds/collectives of the exchange since the last call (this rank)."""
        return CommStats.take()
