"""Recipe: an optimizer as data, in the design form (four axes) or the pipeline form.

A recipe is data (pydantic v2, ``extra="forbid"``); nothing a user sends is evaluated. The forms
live in :mod:`optim_core.forms` (re-exported here, with the leaf stage specs of
:mod:`optim_core.stage_specs`); the design form compiles to the pipeline form
(:func:`optim_core.designs.design_to_pipeline`), which :mod:`optim_core.compile` turns into
stages. ``canonical()`` is the normalised dict of the form the recipe was written in;
``hash()`` hashes the *compiled pipeline* (plus lr / weight decay), so a design recipe and the
equivalent hand-written pipeline get one id.

References: optax ``chain`` / ``partition`` (pipelines and routing by label);
docs/references.md#vocabulary.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from optim_core.designs import design_to_pipeline
from optim_core.forms import (  # noqa: F401 - re-exported: the recipe schema in one place
    LABELS,
    NORM_NAMES,
    CosmosSpec,
    Design,
    Label,
    LowRankSpec,
    Momentum,
    NormName,
    Other,
    Pipeline,
    Placement,
    Projection,
    Route,
    StageSpec,
    WdMode,
)
from optim_core.stage_specs import (  # noqa: F401 - re-exported
    AdafactorSpec,
    AdamMiniSpec,
    AdamSpec,
    EmaSpec,
    FrobeniusSpec,
    FrugalBlockSpec,
    NewtonSchulzSpec,
    NormSpec,
    ScaleSpec,
    ShapeScaleSpec,
    SinkhornSpec,
    StateBits,
    SvdSpec,
    WeightQuantSpec,
    WhitenSpec,
    _OmitDefaults,
    _Strict,
)


class Recipe(_Strict):
    """An optimizer as data: design form (``design``) or pipeline form (``pipeline``).

    Raises:
        pydantic.ValidationError: unknown fields, bad values, or neither/both forms.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    schema_version: Literal[1] = Field(1, alias="schema")
    name: str | None = None
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    design: Design | None = None
    pipeline: Pipeline | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Recipe:
        if (self.design is None) == (self.pipeline is None):
            raise ValueError("recipe: give exactly one of 'design' or 'pipeline'")
        return self

    def to_pipeline(self) -> Pipeline:
        """The pipeline form (compiling the design form if needed)."""
        if self.pipeline is not None:
            return self.pipeline
        assert self.design is not None
        return design_to_pipeline(self.design)

    def canonical(self) -> dict[str, Any]:
        """Normalised JSON-able dict of this recipe (defaults filled, ``name`` dropped)."""
        data = self.model_dump(mode="json", by_alias=True, exclude={"name"}, exclude_none=False)
        return {k: v for k, v in data.items() if v is not None}

    def hash(self) -> str:
        """Stable id (32 hex chars) of the behaviour: compiled pipeline + lr + weight decay."""
        body = {
            "schema": 1,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "pipeline": self.to_pipeline().model_dump(mode="json"),
        }
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def to_json(self) -> str:
        """JSON text (design or pipeline form as written, name included)."""
        return self.model_dump_json(by_alias=True, exclude_none=True)

    def to_yaml(self) -> str:
        """YAML text (needs pyyaml)."""
        import yaml  # optional dependency: only the YAML methods need it

        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return str(yaml.safe_dump(data, sort_keys=False))

    @classmethod
    def from_yaml(cls, text: str) -> Recipe:
        """Parse and validate YAML text (needs pyyaml)."""
        import yaml  # optional dependency: only the YAML methods need it

        return cls.model_validate(yaml.safe_load(text))

    def with_lr(self, lr: float) -> Recipe:
        """A copy with another base lr."""
        return self.model_copy(update={"lr": float(lr)})
