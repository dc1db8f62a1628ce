"""Which processes are still alive: how a crashed run or a dead writer's leftovers are recognised.

A process id alone is not an identity: after a crash the id can be given to a new process, and a
run would then look alive forever. A process is its (host, pid, start time); the start time comes
from psutil (the kernel's record: /proc/<pid>/stat on Linux). Lock files (below) name their holder
the same way, so a lock left by a killed process is recognised and broken.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

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


# ---- lock files ------------------------------------------------------------------------------------
#
# A lock file says who is doing something (a step being computed into the cache): the holder's
# host, pid and start time. A holder on this host that no longer exists left the lock behind (it
# was killed); such a lock is broken. A holder on another host cannot be checked and is trusted.
# Locks only save work: whatever they guard must stay correct without them (the cache's commit is
# atomic), so the rare race in breaking a stale lock costs a step computed twice, never a wrong result.

STALE_GARBAGE_S = 10.0  # an unreadable lock file older than this is left over, not being written


@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    started: float | None
    since: float  # time.time() when the lock was taken

    def alive(self) -> bool | None:
        """Whether the holder still runs; None when it is on another host (cannot be known)."""
        if self.host != HOST:
            return None
        if self.pid == os.getpid() and self.started == process_start_time():
            return True
        return process_alive(self.pid, self.started)

    def describe(self) -> str:
        where = "" if self.host == HOST else f" on {self.host}"
        return f"pid {self.pid}{where}, for {time.time() - self.since:.0f} s"


class LockFile:
    """An exclusive lock held by a file at `path`; see the section comment above."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.held = False

    def acquire(self) -> LockHolder | None:
        """Take the lock and return None, or return the live process that holds it. Stale locks are broken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = LockHolder(HOST, os.getpid(), process_start_time(), time.time())
        for _ in range(5):
            if self._create(me):
                self.held = True
                return None
            holder = read_lock(self.path)
            if holder is None:
                if self.path.exists() and _age(self.path) > STALE_GARBAGE_S:
                    self._break(None)
                continue  # gone meanwhile, or being written: try again
            if holder.alive() is False:
                self._break(holder)
                continue
            return holder
        holder = read_lock(self.path)
        return holder or LockHolder("?", 0, None, time.time())

    def release(self) -> None:
        """Remove the lock if it is still this process's (a breaker may have taken it over)."""
        if not self.held:
            return
        self.held = False
        holder = read_lock(self.path)
        if holder is not None and holder.host == HOST and holder.pid == os.getpid():
            self.path.unlink(missing_ok=True)

    def _create(self, me: LockHolder) -> bool:
        # Written to a private file, then hard-linked into place: the lock appears complete or not at all.
        private = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}")
        private.write_text(json.dumps(asdict(me)))
        try:
            os.link(private, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create (readers may see it half-written)
            try:
                with open(self.path, "x") as handle:
                    handle.write(private.read_text())
                return True
            except FileExistsError:
                return False
        finally:
            private.unlink(missing_ok=True)

    def _break(self, stale: LockHolder | None) -> None:
        """Move the stale lock aside (atomic) and delete it; put back a fresh one taken meanwhile."""
        aside = self.path.with_name(f".{self.path.name}.broken-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        if read_lock(aside) != stale:  # another process took the lock between our read and the move
            try:
                os.link(aside, self.path)
            except OSError:
                pass
        aside.unlink(missing_ok=True)


def read_lock(path: Path) -> LockHolder | None:
    """The holder a lock file names; None if there is no file or it cannot be read."""
    try:
        fields = json.loads(Path(path).read_text())
        return LockHolder(str(fields["host"]), int(fields["pid"]), fields["started"], float(fields["since"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


@contextmanager
def on_sigterm(handler: Callable[[int, object], None]) -> Iterator[None]:
    """Within the block SIGTERM calls `handler`; the previous handler comes back after it.

    Outside the main thread signals cannot be handled, and the block runs with them as they are.
    """
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
