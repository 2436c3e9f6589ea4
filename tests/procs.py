"""Finding the processes a test started, through Linux's /proc (no psutil here)."""

from __future__ import annotations

from pathlib import Path


def rank_pid(rank: int, marker: str = "") -> int | None:
    """The pid of torchrun rank ``rank`` of a ``workers.rank_main`` job whose command line
    contains ``marker`` (e.g. its job directory; empty: any job)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes()
            env = b"\0" + (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"workers.rank_main" in cmd and marker.encode() in cmd:
            if f"\0RANK={rank}\0".encode() in env:
                return int(proc.name)
    return None
