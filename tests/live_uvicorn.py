"""A real ``uvicorn --factory api.main:create_app`` subprocess for tests (API and browser).

``live_uvicorn(env, log_path)`` starts it on a free port, waits until ``/v1/health`` answers,
yields the base URL and always stops the process.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"API at {url} not healthy after {timeout_s}s")


@contextmanager
def live_uvicorn(env: dict[str, str], log_path: Path, timeout_s: float = 60) -> Iterator[str]:
    """Base URL of a uvicorn process serving the app with ``env`` (killed on exit)."""
    port = free_port()
    log = log_path.open("wb")
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, url, timeout_s)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
