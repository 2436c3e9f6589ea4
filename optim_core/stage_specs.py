"""Leaf stage specs of the pipeline form (pydantic, ``extra="forbid"``, finite numbers only).

``type`` is each spec's discriminator and the key of ``optim_core.compile.STAGE_FACTORIES``;
:mod:`optim_core.recipe` assembles them into the ``StageSpec`` union (with the recursive
``lowrank`` spec) and re-exports them. Fields listed in a spec's ``omit_if_default`` stay out of
its dumps while at their default, so adding such a field keeps existing recipes' hashes.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

StateBits = Literal[32, 16, 8, 4]


class _Strict(BaseModel):
    # Finite numbers only: JSON's NaN/Infinity and overflowing literals (1e999) are refused.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _OmitDefaults(_Strict):
    """Fields named in ``omit_if_default`` are left out of every dump while at their default,
    so adding such a field keeps the canonical form and hash of recipes that do not use it."""

    omit_if_default: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        for key in self.omit_if_default:
            if key in data and getattr(self, key) == type(self).model_fields[key].default:
                del data[key]
        return data


# ---------------------------------------------------------------------------------------------
# stage specs (pipeline form); ``type`` is the discriminator and the key of
# ``optim_core.compile.STAGE_FACTORIES``
# ---------------------------------------------------------------------------------------------


class AdamSpec(_OmitDefaults):
    """Adam direction (m, v); ``style`` torch (ε after bias correction) or hf. ``state_bits``
    unset: state in the parameter's dtype (torch.optim); 32 keeps fp32 explicitly."""

    omit_if_default: ClassVar[tuple[str, ...]] = ("state_bits",)

    type: Literal["adam"] = "adam"
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    eps: float = Field(1e-8, ge=0.0)
    style: Literal["torch", "hf"] = "torch"
    state_bits: StateBits | None = None
    block: int | None = Field(None, gt=0)


class EmaSpec(_OmitDefaults):
    """Momentum buffer: lerp / mul_add EMA or heavy_ball; output buffer, Nesterov or Lion interp.
    ``state_bits`` unset: the parameter's dtype; 32 keeps fp32 explicitly."""

    omit_if_default: ClassVar[tuple[str, ...]] = ("state_bits",)

    type: Literal["ema"] = "ema"
    beta: float = Field(0.9, ge=0.0, lt=1.0)
    form: Literal["lerp", "mul_add", "heavy_ball"] = "lerp"
    dampening: float = Field(0.0, ge=0.0, le=1.0)
    init: Literal["zeros", "first"] = "zeros"
    output: Literal["state", "nesterov_lerp", "nesterov_add", "interp"] = "state"
    interp_beta: float = Field(0.9, ge=0.0, le=1.0)
    state_bits: StateBits | None = None
    block: int | None = Field(None, gt=0)


class NormSpec(_OmitDefaults):
    """Stateless per-tensor / per-row / per-column normalization or sign. ``axis`` (standardize
    only): ``row`` standardizes rows, ``larger`` along the larger side (SWAN's GradNorm)."""

    omit_if_default: ClassVar[tuple[str, ...]] = ("axis",)

    type: Literal["rms", "row", "col", "standardize", "sign"]
    eps: float = Field(1e-8, ge=0.0)
    axis: Literal["row", "larger"] = "row"

    @model_validator(mode="after")
    def _axis_only_for_standardize(self) -> NormSpec:
        if self.axis != "row" and self.type != "standardize":
            raise ValueError(f"{self.type}: 'axis' applies to 'standardize' only")
        return self


class FrobeniusSpec(_Strict):
    """Whole update to Frobenius norm ``target``."""

    type: Literal["frobenius"] = "frobenius"
    target: float = Field(1.0, gt=0.0)
    eps: float = Field(1e-8, ge=0.0)
    eps_mode: Literal["add", "clamp"] = "add"


class SinkhornSpec(_Strict):
    """SinkGD's alternating row/column ℓ2 normalization."""

    type: Literal["sinkhorn"] = "sinkhorn"
    iters: int = Field(5, ge=1, le=100)
    eps: float = Field(1e-8, ge=0.0)


class NewtonSchulzSpec(_Strict):
    """Quintic Newton–Schulz orthogonalization (Muon)."""

    type: Literal["ns"] = "ns"
    coeffs: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
    steps: int = Field(5, ge=1, le=50)
    eps: float = Field(1e-7, gt=0.0)
    dtype: Literal["bf16", "fp32"] = "bf16"
    op_order: Literal["torch_addmm", "kj"] = "torch_addmm"


class SvdSpec(_Strict):
    """Exact polar factor U·Vᵀ."""

    type: Literal["svd"] = "svd"


class WhitenSpec(_Strict):
    """SWAN GradWhitening (G·Gᵀ)^(-1/2)·G (:mod:`optim_core.whitening`): ``method`` eigh (exact,
    default), ns (coupled Newton–Schulz, ``steps``/``beta``) or nsds (third-party diagonal
    variant); rescaled to RMS 1 when ``rescale`` (third-party). The legacy ``exact`` flag is
    accepted on input: true -> eigh, false -> ns."""

    type: Literal["whiten"] = "whiten"
    method: Literal["eigh", "ns", "nsds"] = "eigh"
    steps: int = Field(10, ge=1, le=100)
    beta: float = Field(0.5, gt=0.0, le=1.0)
    rescale: bool = False

    @model_validator(mode="before")
    @classmethod
    def _legacy_exact(cls, data: Any) -> Any:
        if isinstance(data, dict) and "exact" in data:
            data = dict(data)
            exact = data.pop("exact")
            data.setdefault("method", "eigh" if exact else "ns")
        return data


class ShapeScaleSpec(_Strict):
    """Muon's shape factor on the lr (torch) or on the update (KJ)."""

    type: Literal["shape_scale"] = "shape_scale"
    rule: Literal["original", "match_rms_adamw"] = "original"
    where: Literal["lr", "update"] = "lr"


class ScaleSpec(_Strict):
    """Multiply the update by a constant."""

    type: Literal["scale"] = "scale"
    factor: float


class AdafactorSpec(_Strict):
    """torch.optim.Adafactor (factored second moment, RMS clipping, relative step)."""

    type: Literal["adafactor"] = "adafactor"
    beta2_decay: float = Field(-0.8, le=0.0)
    eps1: float | None = Field(None, ge=0.0)
    eps2: float = Field(1e-3, ge=0.0)
    d: float = Field(1.0, gt=0.0)


class AdamMiniSpec(_OmitDefaults):
    """Adam-mini: per-element first moment, one second moment per row / head / tensor.

    ``n_heads: model`` (block ``head``): the model's head count, ``model_facts[heads]`` at build
    time (``heads`` = ``n_kv_heads`` for the key projection of a GQA model; it defaults to
    ``n_heads``)."""

    omit_if_default: ClassVar[tuple[str, ...]] = ("heads",)

    type: Literal["adam_mini"] = "adam_mini"
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    eps: float = Field(1e-8, ge=0.0)
    block: Literal["row", "head", "tensor"] = "row"
    n_heads: Annotated[int, Field(ge=1)] | Literal["model"] = 1
    heads: Literal["n_heads", "n_kv_heads"] = "n_heads"


class WeightQuantSpec(_Strict):
    """Q-GaLore simulation mode (:mod:`optim_core.weight_quant`): after each step the weight is
    put back on its ``bits``-bit min-max grid per ``group`` elements (stochastic rounding,
    seeded, when ``stochastic``). Place it last in a route."""

    type: Literal["weight_quant"] = "weight_quant"
    bits: Literal[8, 4] = 8
    group: int = Field(256, ge=1)
    stochastic: bool = True
    seed: int = Field(0, ge=0)


class FrugalBlockSpec(_Strict):
    """FRUGAL Block variant (:mod:`optim_core.frugal_block`): ``round(density·#params)`` of the
    route's parameters take torch-style Adam, the rest signSGD; the active set moves every
    ``refresh`` steps in ``order`` and statistics reset."""

    type: Literal["frugal_block"] = "frugal_block"
    density: float = Field(0.25, ge=0.0, le=1.0)
    refresh: int = Field(200, ge=1)
    order: Literal["descending", "ascending", "mirror", "random"] = "descending"
    inactive_scale: float = Field(1.0, ge=0.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    eps: float = Field(1e-8, ge=0.0)
