"""Turning pydantic validation errors into readable, located messages (`_describe`)."""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from overcommit.config.common import Loc
from overcommit.config.guests import WORKLOAD_KINDS
from overcommit.config.scenario import Scenario
from overcommit.units import show


def _clean_loc(loc: Loc) -> Loc:
    """Drop pydantic's synthetic loc parts: union tags and ``[key]`` markers."""
    cleaned: list[Any] = []
    for index, item in enumerate(loc):
        if item == "[key]":
            continue
        if index and loc[index - 1] == "workload" and item in WORKLOAD_KINDS:
            continue
        cleaned.append(item)
    return tuple(cleaned)


def _strip_type(tp: Any, data: Any) -> Any:
    """Unwrap Annotated / Optional / discriminated unions down to one type."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is Union or origin is types.UnionType:
            members = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
            kind = data.get("kind") if isinstance(data, dict) else None
            for member in members:
                field = getattr(member, "model_fields", {}).get("kind")
                if field is not None and kind in get_args(field.annotation):
                    return member
            return None
        else:
            return tp


def _model_at(loc: Loc, data: Any) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` (None if not a model)."""
    tp: Any = Scenario
    for item in loc:
        tp = _strip_type(tp, data)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(item) if isinstance(item, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
        try:
            data = data[item]
        except Exception:
            data = None
    tp = _strip_type(tp, data)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unknown_key_message(loc: Loc, data: Any) -> str:
    key = loc[-1] if loc else None
    message = f"unknown key {show(key)}"
    model = _model_at(loc[:-1], data)
    if model is None:
        return message
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    if close:
        return f"{message} (did you mean {close[0]!r}?)"
    return f"{message} (allowed: {', '.join(allowed)})"


_SIMPLE_MESSAGES = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "invalid_key": "mapping keys must be strings",
}


def _describe(error: Mapping[str, Any], loc: Loc, data: Any) -> str:
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return _unknown_key_message(loc, data)
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {show(value)}"
    if kind == "union_tag_invalid":
        return f"unknown workload kind {show(ctx.get('tag'))} (known: {', '.join(WORKLOAD_KINDS)})"
    if kind == "union_tag_not_found":
        return f"missing 'kind' (one of: {', '.join(WORKLOAD_KINDS)})"
    if kind in _SIMPLE_MESSAGES:
        return f"{_SIMPLE_MESSAGES[kind]}, got {show(value)}"
    if kind == "greater_than":
        return f"must be greater than {ctx.get('gt')}, got {show(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {show(value)}"
    if kind == "less_than":
        return f"must be less than {ctx.get('lt')}, got {show(value)}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}, got {show(value)}"
    if kind == "too_short":
        least = ctx.get("min_length")
        return f"needs at least {least} entr{'y' if least == 1 else 'ies'}"
    if kind == "too_long":
        return f"allows at most {ctx.get('max_length')} entries"
    if kind == "recursion_loop":
        return "refers to itself (YAML alias loop)"
    message = str(error.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    return message


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "invalid value"
