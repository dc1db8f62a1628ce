"""The processes of a data-parallel run: which one this is, how work is split, how results combine.

A run is one process unless a launcher (`workbench run --processes N`, `torchrun`, `accelerate
launch`) started several and told each its RANK and WORLD_SIZE. Then accelerate's PartialState joins
them into a torch.distributed group: gloo on CPU, nccl on CUDA (one GPU per process, by LOCAL_RANK).

How steps use it: the batches of a dataset are cut exactly as in one process, and rank r takes
batches r, r + W, r + 2W, ... (`World.shard`), so no example is seen twice or lost and batch
boundaries (which `importance` at batch granularity depends on) do not move with the world size;
sums are then added over ranks (`World.sum`) and per-example outputs gathered (`World.gather`).
Rank 0 alone writes the store and commits cache entries (workbench/executor.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
WAIT_HOURS = 48  # how long a rank waits at a collective for the others
_WORLD: "World | None" = None


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # gloo | nccl; None for one process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of `items`: every size-th item from its rank (round robin)."""
        return list(items[self.rank :: self.size])

    def sum(self, tensor: "torch.Tensor") -> "torch.Tensor":
        """The element-wise sum of `tensor` over ranks, in place (and returned)."""
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_each(self, tensors: "Iterable[torch.Tensor]") -> None:
        """Every tensor summed over ranks, in place (running sums of a streaming statistic)."""
        for tensor in tensors:
            self.sum(tensor)

    def sum_number(self, value: float | int) -> float | int:
        """A Python number added over ranks (counts, losses)."""
        if not self.distributed:
            return value
        import torch

        total = self.sum(torch.tensor([value], dtype=torch.float64, device=self.device_for_collectives()))
        return type(value)(total.item()) if isinstance(value, int) else total.item()

    def gather_by_rank(self, value: T) -> list[T]:
        """One value from each rank, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.size
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast(self, value: T) -> T:
        """Rank 0's `value`, on every rank."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def add_up(self, value: T) -> T:
        """A running total (number, array, tensor, or dicts and lists of them) added over ranks."""
        if not self.distributed:
            return value
        return _add_up(self.gather_by_rank(value))

    def add_up_attributes(self, holder: object, *names: str) -> None:
        """Replace each named running total of `holder` by its sum over ranks (one exchange)."""
        if not self.distributed:
            return
        parts = self.gather_by_rank({name: getattr(holder, name) for name in names})
        for name in names:
            setattr(holder, name, _add_up([part[name] for part in parts]))

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def device_for_collectives(self) -> "torch.device":
        """nccl reduces CUDA tensors only; gloo CPU ones."""
        import torch

        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


def _add_up(parts: list[Any]) -> Any:
    """Sum of like-shaped totals; dicts are summed key by key (a key may be missing on some ranks)."""
    import copy

    first = parts[0]
    if isinstance(first, dict):
        merged = copy.copy(first)  # keeps the type (Counter, defaultdict)
        for key in {key for part in parts for key in part}:
            merged[key] = _add_up([part[key] for part in parts if key in part])
        return merged
    if isinstance(first, list):
        return [_add_up([part[i] for part in parts]) for i in range(len(first))]
    total = first
    for part in parts[1:]:
        total = total + part
    return total


def launched_world_size() -> int:
    """WORLD_SIZE as a launcher set it (1 when none did)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def current_world(*, cpu: bool = False) -> World:
    """This process's place in the run, joining the process group on first use.

    `cpu`: the recipe runs on the CPU even if there are GPUs (gloo, not nccl).
    """
    global _WORLD
    if _WORLD is None:
        _WORLD = _join(cpu) if launched_world_size() > 1 else World()
    return _WORLD


def _join(cpu: bool) -> World:
    import torch
    from accelerate import PartialState

    # init_process_group from the launcher's environment: nccl on CUDA, gloo on CPU. Ranks wait for
    # rank 0 while it runs a step alone (a probe) or waits for another run computing the same step:
    # the default 30-minute timeout would kill long ones. A dead rank is the launcher's to notice.
    state = PartialState(cpu=cpu or not torch.cuda.is_available(), timeout=timedelta(hours=WAIT_HOURS))
    backend = "nccl" if state.backend == "nccl" else "gloo"
    if backend == "gloo" and "OMP_NUM_THREADS" not in os.environ:  # a launcher that did not split the cores
        torch.set_num_threads(cores_per_process(int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))))
    world = World(state.process_index, state.num_processes, state.local_process_index, backend)
    if backend == "nccl":
        torch.cuda.set_device(world.local_rank)
    return world


def cores_per_process(processes: int) -> int:
    """This machine's cores (those this process may use) split among `processes` on it."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, processes))


@contextmanager
def alone() -> Iterator[None]:
    """Within the block this process is a world of its own (rank 0 running a step by itself)."""
    global _WORLD
    saved, _WORLD = _WORLD, World()
    try:
        yield
    finally:
        _WORLD = saved


def leave() -> None:
    """Leave the process group at the end of a run (a clean exit; nccl warns otherwise)."""
    global _WORLD
    if _WORLD is not None and _WORLD.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _WORLD = None
