"""GET /v1/presets: optim_core's named recipes (canonical form and hash)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import ReaderDep
from api.schemas import PresetPublic
from records.recipes import preset_info, preset_names

router = APIRouter(prefix="/presets", tags=["presets"])


def _preset(name: str) -> PresetPublic:
    info = preset_info(name)
    return PresetPublic(
        name=name, hash=info["hash"], description=info.get("description"), recipe=info["canonical"]
    )


@router.get("", response_model=list[PresetPublic])
def list_presets(_reader: ReaderDep) -> list[PresetPublic]:
    """Every preset with its canonical recipe, hash and a description of its design."""
    return [_preset(name) for name in preset_names()]


@router.get("/{name}", response_model=PresetPublic)
def get_preset(name: Annotated[str, Path(max_length=128)], _reader: ReaderDep) -> PresetPublic:
    """One preset; 404 lists the valid names."""
    return _preset(name)
