"""`workbench run --processes N`: start N copies of the command through torch's elastic launcher.

This is what `torchrun --standalone --nproc-per-node N -m workbench run …` does, called in-process
so that the exit code and any failure come back as the workbench's own (exit 2 with the failing
rank's message, printed by that rank) instead of the launcher's traceback. Every copy learns its
rank from the environment the launcher sets (workbench/distributed.py joins the group).
"""

from __future__ import annotations

import os
import sys
import uuid

from workbench.errors import WorkbenchError

MAX_PROCESSES = 256


def parse_processes(value: str) -> int:
    """`--processes N` or `auto` (one per GPU; one process where there is none)."""
    if value == "auto":
        import torch

        return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_PROCESSES:
        raise WorkbenchError(
            f"--processes {value!r}: give a whole number from 1 to {MAX_PROCESSES}, or auto", hint="auto = one process per GPU"
        )
    return count


def launch_processes(count: int, arguments: list[str]) -> int:
    """Run `python -m workbench <arguments>` as `count` ranks on this machine; their exit code."""
    if "WORLD_SIZE" in os.environ and os.environ["WORLD_SIZE"] != "1":
        raise WorkbenchError("--processes inside an already launched run", hint="give either --processes or a launcher, not both")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    _quiet_launcher_logs()
    _split_cores(count)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=count,
        run_id=f"workbench-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port, as torchrun --standalone picks
        max_restarts=0,  # a failed rank fails the run; the next run resumes from the cache
        monitor_interval=0.2,
    )
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "workbench", *arguments)
    except ChildFailedError as failure:
        rank, first = failure.get_first_failure()  # the rank that failed first, not those stopped after it
        if first.exitcode < 0:  # killed by a signal: it could not say why itself
            sys.stderr.write(f"rank {rank} of {count} (pid {first.pid}) was killed by {first.signal_name()}\n")
        return first.exitcode if first.exitcode > 0 else 1
    except KeyboardInterrupt:
        return 130
    return 0


def _quiet_launcher_logs() -> None:
    """The launcher's own log lines (file paths, pids) give way to one line of ours on failure."""
    import logging

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _split_cores(count: int) -> None:
    """Each rank gets its share of this machine's cores (fair speed-ups; no oversubscription)."""
    from workbench.distributed import cores_per_process

    os.environ.setdefault("OMP_NUM_THREADS", str(cores_per_process(count)))
