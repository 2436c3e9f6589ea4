"""Process plumbing shared by the Celery worker and the CLI's local training pools."""

from __future__ import annotations

import signal
import sys


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a killed worker, a stopped
    ``optforge benchmark``), so no orphan keeps training. A no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # no glibc (e.g. musl): the lease renewer's parent check still applies
        pass
