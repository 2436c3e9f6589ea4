"""Stage and state-codec protocols shared by every optim_core building block.

A *stage* is one step of a per-parameter pipeline (optax ``chain`` style): ``init`` declares its
state slots for a parameter, ``update`` maps the incoming update tensor to the outgoing one and
mutates its slots. A *codec* decides how a slot is stored (fp32, bf16, 8-bit, 4-bit block-wise).

State layout inside ``torch.optim.Optimizer.state[p]``: the optimizer stores the slots of stage
``i`` under ``"{i}.{stage.name}.{key}"``; ``update`` receives a plain ``dict`` whose keys are the
stage-local ``key`` s (the optimizer strips and re-adds the prefix). A slot ``m`` stored through a
codec uses the key ``"m"`` when the codec returns a single tensor (fp32, bf16) and ``"m.<part>"``
for multi-tensor codecs (``"m.q"``, ``"m.scale"``): see :func:`slot_init` / :func:`slot_read` /
:func:`slot_write`.

Conventions (docs/architecture.md, "optim_core internals"):
- ``u`` entering ``update`` is an fp32 tensor that may alias ``p.grad``: treat it as read-only and
  return a new tensor (or one you own). ``step`` is 1-based (``t`` in docs/references.md#conventions).
- ``state_bytes(shape, dtype)`` must equal the bytes of the tensors ``init`` creates for a
  parameter of that shape and dtype (``numel * element_size``), so the analytical accounting
  (``optim_core.state_bytes``) equals the measured one exactly.
- Optional hook ``scale_lr(lr, p, state, step) -> float``: a stage that changes the step size
  (torch-Muon shape scaling on the lr, Adafactor's relative step) returns the lr to apply.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "BF16_CODEC",
    "FP32_CODEC",
    "NATIVE_CODEC",
    "Bf16Codec",
    "DtypeCodec",
    "Fp32Codec",
    "NativeCodec",
    "Stage",
    "StateCodec",
    "as_matrix_shape",
    "codec_for_bits",
    "numel",
    "resolve_codec",
    "slot_init",
    "slot_read",
    "slot_write",
    "tensor_bytes",
]


@runtime_checkable
class Stage(Protocol):
    """One step of a per-parameter pipeline."""

    @property
    def name(self) -> str:
        """Short stage name used in state keys (``"adam"``, ``"ema"``, ``"row"``, ...)."""
        ...

    def init(self, p: Tensor) -> dict[str, Tensor]:
        """State slots of this stage for parameter ``p`` (may be empty)."""
        ...

    def update(self, u: Tensor, state: dict[str, Tensor], p: Tensor, step: int) -> Tensor:
        """New update from incoming ``u`` (fp32, read-only); mutates ``state``; ``step`` 1-based."""
        ...

    def state_bytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """Bytes ``init`` allocates for a parameter of ``shape``/``dtype`` (analytical)."""
        ...


@runtime_checkable
class StateCodec(Protocol):
    """How one state slot is stored. ``decode(encode(t), t.shape)`` approximates ``t`` (fp32)."""

    @property
    def name(self) -> str:
        """Codec name: ``"fp32"``, ``"bf16"``, ``"dyn8s"``, ...."""
        ...

    @property
    def bits(self) -> int:
        """Nominal bits per stored value."""
        ...

    def encode(self, t: Tensor) -> dict[str, Tensor]:
        """Stored tensors for fp32 ``t``: ``{"": x}`` for single-tensor codecs, else named parts."""
        ...

    def decode(self, d: dict[str, Tensor], shape: tuple[int, ...]) -> Tensor:
        """An fp32 tensor of ``shape`` from the stored parts (a view is allowed for fp32)."""
        ...

    def state_bytes(self, shape: tuple[int, ...]) -> int:
        """Bytes ``encode`` stores for a slot of ``shape`` (analytical)."""
        ...


def numel(shape: tuple[int, ...]) -> int:
    """Number of elements of ``shape``."""
    return math.prod(shape)


def tensor_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Bytes of a dense tensor of ``shape`` and ``dtype``."""
    return numel(shape) * _itemsize(dtype)


def _itemsize(dtype: torch.dtype) -> int:
    return dtype.itemsize


def as_matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """2-D view of a >=2-D shape: ``(shape[0], prod(rest))`` (conv weights flattened as in Muon)."""
    if len(shape) < 2:
        raise ValueError(f"expected a >=2-D shape, got {tuple(shape)}")
    return shape[0], numel(tuple(shape[1:]))


class Fp32Codec:
    """Plain fp32 storage: ``decode`` returns the stored tensor itself, so in-place ops persist."""

    name = "fp32"
    bits = 32

    def encode(self, t: Tensor) -> dict[str, Tensor]:
        return {"": t.float()}

    def decode(self, d: dict[str, Tensor], shape: tuple[int, ...]) -> Tensor:
        return d[""]

    def state_bytes(self, shape: tuple[int, ...]) -> int:
        return tensor_bytes(shape, torch.float32)


class Bf16Codec:
    """bf16 storage (round-to-nearest-even on write); decoded to an fp32 work copy."""

    name = "bf16"
    bits = 16

    def encode(self, t: Tensor) -> dict[str, Tensor]:
        return {"": t.to(torch.bfloat16)}

    def decode(self, d: dict[str, Tensor], shape: tuple[int, ...]) -> Tensor:
        return d[""].float()

    def state_bytes(self, shape: tuple[int, ...]) -> int:
        return tensor_bytes(shape, torch.bfloat16)


class DtypeCodec:
    """Storage in a float ``dtype`` (e.g. fp16, fp64 state of such parameters); fp32 work copy."""

    bits = 0

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.bits = 8 * dtype.itemsize
        self.name = str(dtype).removeprefix("torch.")

    def encode(self, t: Tensor) -> dict[str, Tensor]:
        return {"": t.to(self.dtype)}

    def decode(self, d: dict[str, Tensor], shape: tuple[int, ...]) -> Tensor:
        return d[""].float()

    def state_bytes(self, shape: tuple[int, ...]) -> int:
        return tensor_bytes(shape, self.dtype)


class NativeCodec:
    """State in the parameter's dtype, as torch.optim keeps it (``state_bits`` unset): resolved
    per parameter by :func:`resolve_codec` (fp32 -> FP32_CODEC, bf16 -> BF16_CODEC, other float
    dtypes -> DtypeCodec); using it unresolved is a bug and raises."""

    name = "native"
    bits = 0

    def _unresolved(self) -> TypeError:
        return TypeError("NativeCodec: resolve it for the parameter dtype with resolve_codec()")

    def encode(self, t: Tensor) -> dict[str, Tensor]:
        raise self._unresolved()

    def decode(self, d: dict[str, Tensor], shape: tuple[int, ...]) -> Tensor:
        raise self._unresolved()

    def state_bytes(self, shape: tuple[int, ...]) -> int:
        raise self._unresolved()


FP32_CODEC = Fp32Codec()
BF16_CODEC = Bf16Codec()
NATIVE_CODEC = NativeCodec()


def resolve_codec(codec: StateCodec, dtype: torch.dtype) -> StateCodec:
    """The concrete codec of ``codec`` for a parameter of ``dtype`` (only NativeCodec varies)."""
    if not isinstance(codec, NativeCodec):
        return codec
    if dtype == torch.float32 or not dtype.is_floating_point:
        return FP32_CODEC
    if dtype == torch.bfloat16:
        return BF16_CODEC
    return DtypeCodec(dtype)


def codec_for_bits(bits: int | None, block: int | None = None, signed: bool = True) -> StateCodec:
    """Codec for ``state_bits``: None -> the parameter's dtype (:class:`NativeCodec`),
    32 -> fp32, 16 -> bf16, 8/4 -> ``quantize.make_codec``.

    ``signed`` picks the signed quantization map (first moments) or the unsigned one (second
    moments); ``block`` the block size (``None``: the codec's default).

    Raises:
        ValueError: unknown bit width.
    """
    if bits is None:
        return NATIVE_CODEC
    if bits == 32:
        return FP32_CODEC
    if bits == 16:
        return BF16_CODEC
    if bits in (8, 4):
        from optim_core import quantize  # imports this module: import when first needed

        return quantize.make_codec(bits, signed=signed, block_size=block)
    raise ValueError(f"state_bits: must be one of [32, 16, 8, 4], got {bits!r}")


def _key(slot: str, part: str) -> str:
    return slot if part == "" else f"{slot}.{part}"


def slot_init(slot: str, t: Tensor, codec: StateCodec) -> dict[str, Tensor]:
    """Stage-local state entries for slot ``slot`` holding initial value ``t``.

    A block-quantized zero state gets block scales of 0, as torchao's ``OptimState*bit.zeros``:
    it decodes to exactly 0 (encoding zeros clips the scale at 1e-12, and a map without a 0
    level, the 4-bit unsigned one, would decode to 1e-12/16)."""
    parts = codec.encode(t)
    if "scale" in parts and "q" in parts and not bool(t.any()):
        parts["scale"] = torch.zeros_like(parts["scale"])
    return {_key(slot, part): x for part, x in parts.items()}


def slot_read(
    state: dict[str, Tensor], slot: str, shape: tuple[int, ...], codec: StateCodec
) -> Tensor:
    """The fp32 value of ``slot`` (for fp32 the stored tensor itself)."""
    if isinstance(codec, Fp32Codec):
        return state[slot]
    prefix = slot + "."
    parts = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if slot in state:
        parts[""] = state[slot]
    return codec.decode(parts, shape)


def slot_write(state: dict[str, Tensor], slot: str, t: Tensor, codec: StateCodec) -> None:
    """Store fp32 value ``t`` into ``slot`` (copies into existing tensors to keep them in place)."""
    if isinstance(codec, Fp32Codec):
        if state[slot] is not t:
            state[slot].copy_(t)
        return
    for part, x in codec.encode(t).items():
        key = _key(slot, part)
        old = state.get(key)
        if old is not None and old.shape == x.shape and old.dtype == x.dtype:
            old.copy_(x)
        else:
            state[key] = x
