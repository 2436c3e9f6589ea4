"""POST /v1/recipes/validate: canonical form, hash and analytical state bytes of a recipe."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ReaderDep
from api.errors import unprocessable
from api.schemas import RecipeValidateIn, RecipeValidationPublic

router = APIRouter(prefix="/recipes", tags=["recipes"])


@router.post("/validate", response_model=RecipeValidationPublic)
def validate(body: RecipeValidateIn, _reader: ReaderDep) -> RecipeValidationPublic:
    """Validate a recipe or preset; with ``workload``, its optimizer-state bytes on that model.

    Read-only (no key needed unless reads are guarded); errors are 422 with field paths.
    """
    from records.recipes import RecipeError, validate_recipe

    if (body.recipe is None) == (body.preset is None):
        exc = RecipeError.at((), "give exactly one of 'recipe' (an object) or 'preset' (a name)")
        raise unprocessable(exc)
    ref: object = body.preset if body.preset is not None else {"recipe": body.recipe}
    try:
        info = validate_recipe(ref, workload=body.workload)
    except (ValueError, TypeError) as exc:  # RecipeError and anything optim_core refuses
        raise unprocessable(exc) from exc
    return RecipeValidationPublic(**info)
