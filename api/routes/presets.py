"""GET /v1/presets: optim_core's named recipes (canonical form and hash)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from api.deps import ReaderDep
from api.schemas import PresetPublic

router = APIRouter(prefix="/presets", tags=["presets"])


def _preset(name: str) -> PresetPublic:
    from records.recipes import validate_recipe

    info = validate_recipe(name)
    return PresetPublic(
        name=name, hash=info["hash"], description=info.get("description"), recipe=info["canonical"]
    )


@router.get("", response_model=list[PresetPublic])
def list_presets(_reader: ReaderDep) -> list[PresetPublic]:
    """Every preset with its canonical recipe, hash and a description of its design."""
    from records.recipes import preset_names

    return [_preset(name) for name in preset_names()]


@router.get("/{name}", response_model=PresetPublic)
def get_preset(name: Annotated[str, Path(max_length=128)], _reader: ReaderDep) -> PresetPublic:
    """One preset; 404 lists the valid names."""
    from records.recipes import preset_names

    valid = preset_names()
    if name not in valid:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"unknown preset {name!r}; valid: {', '.join(valid)}"
        )
    return _preset(name)
