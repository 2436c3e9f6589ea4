"""Domain errors (core/errors.py): one base, kinds that keep the builtin ones, field paths."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from core.errors import Conflict, DomainError, Invalid, NotFound


class _Body(BaseModel):
    steps: int


def test_kinds_share_one_base_and_keep_the_builtin_kinds() -> None:
    assert all(issubclass(k, DomainError) for k in (NotFound, Conflict, Invalid))
    assert issubclass(NotFound, LookupError) and not issubclass(NotFound, ValueError)
    assert issubclass(Conflict, ValueError) and issubclass(Invalid, ValueError)
    assert not issubclass(Conflict, Invalid) and not issubclass(Invalid, Conflict)


def test_invalid_carries_field_valid_and_errors() -> None:
    err = Invalid("queue must be 'gpu'", "queue", ["gpu"])
    assert err.field == ("queue",) and err.valid == ["gpu"] and str(err) == "queue must be 'gpu'"
    assert err.errors == [{"loc": ("queue",), "msg": "queue must be 'gpu'", "type": "value_error"}]


def test_invalid_from_pydantic_keeps_every_path() -> None:
    with pytest.raises(ValidationError) as caught:
        _Body.model_validate({"steps": "many"})
    err = Invalid.from_pydantic(caught.value.errors())
    assert err.field == ("steps",) and err.errors[0]["type"] == "int_parsing"
    assert str(err).startswith("steps: ")


def test_unknown_workload_is_not_found_with_the_valid_names() -> None:
    from core.workloads import WORKLOADS, get_workload

    with pytest.raises(NotFound) as caught:
        get_workload("nope")
    assert caught.value.valid == list(WORKLOADS) and "'nope'" in str(caught.value)
