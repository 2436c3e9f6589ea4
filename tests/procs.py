"""Finding the processes a test started, through Linux's /proc (no psutil here)."""

from __future__ import annotations

from pathlib import Path


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (None once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def descends_from(pid: int, ancestor: int, depth: int = 6) -> bool:
    """Whether ``ancestor`` is among the first ``depth`` ancestors of ``pid``."""
    current: int | None = pid
    for _ in range(depth):
        current = parent_pid(current) if current else None
        if current is None or current <= 1:
            return False
        if current == ancestor:
            return True
    return False


def rank_pid(rank: int, marker: str = "", ancestor: int | None = None) -> int | None:
    """The pid of torchrun rank ``rank`` of a ``workers.rank_main`` job whose command line
    contains ``marker`` (e.g. its job directory) and, with ``ancestor``, that descends from that
    process (e.g. the worker that launched it), so concurrent jobs are never mistaken for it."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes()
            env = b"\0" + (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"workers.rank_main" not in cmd or marker.encode() not in cmd:
            continue
        if f"\0RANK={rank}\0".encode() in env:
            if ancestor is None or descends_from(int(proc.name), ancestor):
                return int(proc.name)
    return None
