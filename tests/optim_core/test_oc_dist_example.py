"""The FSDP2 example of docs/distributed.md runs on 2 gloo ranks (as torchrun would start it:
RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT in the environment) and its loss goes down."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from dist_ranks import free_port

ROOT = Path(__file__).resolve().parents[2]


def example_code() -> str:
    text = (ROOT / "docs" / "distributed.md").read_text()
    block = text.split("<!-- distributed-example:start -->")[1].split(
        "<!-- distributed-example:end"
    )[0]
    return block.split("```python\n")[1].split("```")[0]


def test_docs_example_runs_on_two_ranks(tmp_path: Path) -> None:
    script = tmp_path / "train_fsdp.py"
    script.write_text(example_code())
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    base |= {"WORLD_SIZE": "2", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)],
            env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            outputs.append(out)
            assert proc.returncode == 0, out
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, out in enumerate(outputs):
        losses = [float(x) for x in re.findall(rf"rank {rank} step \d+: loss ([\d.]+)", out)]
        assert len(losses) == 2 and losses[1] < 0.8 * losses[0], out
        assert re.search(rf"rank {rank}: [1-9]\d* state bytes", out), out
