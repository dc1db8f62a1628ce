"""Which processes are still alive: how a crashed run or a dead writer's leftovers are recognised.

A process id alone is not an identity: after a crash the id can be given to a new process, and a
run would then look alive forever. A process is its (host, pid, start time); the start time comes
from psutil (the kernel's record: /proc/<pid>/stat on Linux).
"""

from __future__ import annotations

import os
import socket

HOST = socket.gethostname()
START_TOLERANCE_S = 1.0  # psutil derives the start time from boot time and clock ticks


def process_alive(pid: int, started: float | None = None) -> bool:
    """Whether the process with that id on this host exists and, if `started` is given, is that one."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to someone else
        pass
    if started is None:
        return True
    now_started = process_start_time(pid)
    return now_started is None or abs(now_started - started) <= START_TOLERANCE_S


def process_start_time(pid: int | None = None) -> float | None:
    """When a process started (seconds since the epoch), or None if that cannot be known."""
    import psutil

    try:
        return psutil.Process(pid or os.getpid()).create_time()
    except (psutil.Error, OSError):
        return None
