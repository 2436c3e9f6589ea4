"""GET /v1/workloads: the workload catalog (sizes, budgets, caps)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import ReaderDep
from api.schemas import WorkloadPublic
from core.workloads import WORKLOADS, WorkloadSpec
from core.workloads import get_workload as core_workload

router = APIRouter(prefix="/workloads", tags=["workloads"])


def workload_public(spec: WorkloadSpec) -> WorkloadPublic:
    return WorkloadPublic(
        name=spec.name,
        kind=spec.kind,
        description=spec.description,
        model=spec.model,
        n_params=spec.n_params,
        batch_size=spec.batch_size,
        seq_len=spec.seq_len,
        default_steps=spec.default_steps,
        max_steps=spec.max_steps,
        default_lr=spec.default_lr,
        eval_every=spec.eval_every,
        target_loss=spec.target_loss,
        expected_cpu_s_per_step=spec.expected_cpu_s_per_step,
    )


@router.get("", response_model=list[WorkloadPublic])
def list_workloads(_reader: ReaderDep) -> list[WorkloadPublic]:
    """Every workload a run may use."""
    return [workload_public(spec) for spec in WORKLOADS.values()]


@router.get("/{name}", response_model=WorkloadPublic)
def get_workload(name: Annotated[str, Path(max_length=64)], _reader: ReaderDep) -> WorkloadPublic:
    """One workload; 404 lists the valid names."""
    return workload_public(core_workload(name))
