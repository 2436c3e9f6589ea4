"""What a client submits to start a study (API body, CLI flags, bench)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import Invalid
from search.space import DesignSpace, default_space, load_space


class StudySpecError(Invalid):
    """A study spec the service refuses (unknown sampler, limits...); ``field`` names the key."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message, (field,))


class StudySpec(BaseModel):
    """What a client submits to start a study (API body, CLI flags)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = Field(None, max_length=200)
    workload: str = "synthetic-lm"
    steps: int = Field(50, ge=1)
    space: dict[str, Any] | None = None  # None = the shipped default space
    objectives: list[str] = Field(default_factory=lambda: ["val_loss", "state_bytes_per_param"])
    sampler: str = "tpe"
    seed: int | None = Field(0, ge=0, lt=2**31)
    n_trials: int = Field(20, ge=1)
    parallelism: int = Field(2, ge=1)
    seeds: list[int] = Field(default_factory=lambda: [0])
    max_state_bytes_per_param: float | None = Field(None, gt=0)
    pruning: bool = True
    max_retries: int = Field(1, ge=0, le=5)
    queue: Literal["cpu", "gpu"] = "cpu"

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v):
            raise ValueError("seeds must be a non-empty list of distinct ints")
        if any(s < 0 or s >= 2**31 for s in v):
            raise ValueError("seeds must be in [0, 2**31)")
        return v

    def design_space(self) -> DesignSpace:
        return default_space() if self.space is None else load_space(self.space)
