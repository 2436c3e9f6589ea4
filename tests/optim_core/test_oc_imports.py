"""optim_core's data modules load without torch; the torch-needing names load on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_data_modules_import_without_torch() -> None:
    proc = _run(
        "import optim_core.describe, optim_core.recipe, sys; assert 'torch' not in sys.modules"
    )
    assert proc.returncode == 0, proc.stderr


def test_package_presets_and_describe_stay_torch_free() -> None:
    proc = _run(
        "import sys, optim_core; r = optim_core.presets.get('muon', lr=0.02); "
        "text = optim_core.describe(r); r.hash(); "
        "assert text.startswith('muon: lr 0.02'), text; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    assert proc.returncode == 0, proc.stderr


def test_torch_names_load_on_first_use() -> None:
    proc = _run(
        "import sys, optim_core; assert 'torch' not in sys.modules; "
        "import torch; p = torch.nn.Parameter(torch.ones(4, 4)); "
        "opt = optim_core.build(optim_core.presets.get('adamw'), [p]); "
        "assert isinstance(opt, optim_core.RecipeOptimizer); "
        "assert optim_core.state_bytes(optim_core.presets.get('adamw'), {'w': (4, 4)}) == 128; "
        "from optim_core import measure_state_bytes, weight_bytes; "
        "assert set(optim_core.__all__) <= set(dir(optim_core))"
    )
    assert proc.returncode == 0, proc.stderr


def test_unknown_attribute_is_an_attribute_error() -> None:
    import optim_core

    try:
        optim_core.no_such_name  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("optim_core.no_such_name did not raise")
