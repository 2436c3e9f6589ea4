"""Suite-wide fixtures: an isolated data dir, settings reset, GPU marker handling."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from settings_reset import reset_settings_caches

# Isolate every test session from the user's ~/.optforge before any settings are read.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="optforge-test-"))
os.environ["OPTFORGE_DATA_DIR"] = str(_SESSION_DIR / "data")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", os.environ.get("OPTFORGE_TEST_CUDA", ""))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh OPTFORGE_DATA_DIR (SQLite DB, embedded broker, cache) for one test."""
    d = tmp_path / "optforge"
    monkeypatch.setenv("OPTFORGE_DATA_DIR", str(d))
    for var in ("OPTFORGE_DATABASE_URL", "OPTFORGE_BROKER_URL", "OPTFORGE_OPTUNA_STORAGE_URL"):
        monkeypatch.delenv(var, raising=False)
    reset_settings_caches()
    yield d
    reset_settings_caches()


# Shared fixtures of the service tests live beside them (tests/ is on sys.path via rootdir).
pytest_plugins = ["integration.fixtures_service", "integration.fixtures_api"]
