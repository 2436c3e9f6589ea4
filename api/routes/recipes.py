"""POST /v1/recipes/validate: canonical form, hash and analytical state bytes of a recipe."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ReaderDep
from api.schemas import RecipeValidateIn, RecipeValidationPublic
from records.recipes import RecipeError, validate_recipe

router = APIRouter(prefix="/recipes", tags=["recipes"])


@router.post("/validate", response_model=RecipeValidationPublic)
def validate(body: RecipeValidateIn, _reader: ReaderDep) -> RecipeValidationPublic:
    """Validate a recipe or preset; with ``workload``, its optimizer-state bytes on that model.

    Read-only (no key needed unless reads are guarded); errors are 422 with field paths.
    """
    if (body.recipe is None) == (body.preset is None):
        raise RecipeError.at((), "give exactly one of 'recipe' (an object) or 'preset' (a name)")
    ref: object = body.preset if body.preset is not None else {"recipe": body.recipe}
    return RecipeValidationPublic(**validate_recipe(ref, workload=body.workload))
