"""Loading scenarios: `load_scenario` and `load_scenario_text` (which raise `ConfigError`, and
only that, for bad input), and command-line overrides (`set_path`, `apply_overrides`)."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from overcommit.config.common import (
    _BASE_DIR,
    _DEFER_CROSS_CHECKS,
    MAX_PROBLEMS,
    ConfigError,
    Loc,
    Problem,
    _field,
)
from overcommit.config.errors import _clean_loc, _describe, _one_line
from overcommit.config.scenario import Scenario, _cross_problems
from overcommit.config.yamldoc import _Document, _parse_yaml
from overcommit.units import show


def _build(
    *,
    text: str | None,
    base: Any,
    source: str,
    overrides: Sequence[tuple[str, Any, str]],
) -> Scenario:
    """Parse (if text), apply overrides, validate, cross-check; raise ConfigError on problems."""
    document: _Document | None = None
    problems: list[Problem] = []
    if text is not None:
        document, problems = _parse_yaml(text, source)
        if document is None:
            raise ConfigError(problems)
        data = document.data
    else:
        data = copy.deepcopy(base)

    applied: list[tuple[Loc, str, str]] = []
    for path, value, override_source in overrides:
        try:
            applied.append((set_path(data, path, value), path, override_source))
        except ValueError as exc:
            problems.append(Problem(override_source, None, path or "(empty path)", str(exc)))
    if problems:
        raise ConfigError(problems)

    def locate(loc: Loc, message: str) -> Problem:
        for steps, path, override_source in reversed(applied):
            if loc[: len(steps)] == steps:
                rest = _field(loc[len(steps) :]) if len(loc) > len(steps) else ""
                field = path + ("" if not rest else ("" if rest.startswith("[") else ".") + rest)
                return Problem(override_source, None, field, _one_line(message))
            if steps[: len(loc)] == loc:
                return Problem(override_source, None, path, _one_line(message))
        if applied:
            message += " (after command-line overrides)"
        line = document.line(loc) if document is not None else None
        return Problem(source, line, _field(loc), _one_line(message))

    try:
        base_dir = os.path.dirname(os.path.abspath(source)) if os.path.exists(source) else "."
        scenario = Scenario.model_validate(
            data, context={_DEFER_CROSS_CHECKS: True, _BASE_DIR: base_dir}
        )
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = _clean_loc(tuple(error.get("loc", ())))
            problems.append(locate(loc, _describe(error, loc, data)))
        raise ConfigError(_limit(_sorted(problems))) from None
    for loc, message in _cross_problems(scenario):
        problems.append(locate(loc, message))
    if problems:
        raise ConfigError(_limit(_sorted(problems)))
    scenario._source = source
    scenario._text = text
    scenario._base = base if text is None else None
    scenario._overrides = tuple(overrides)
    return scenario


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))


def _limit(problems: list[Problem]) -> list[Problem]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    rest = len(problems) - MAX_PROBLEMS
    last = problems[MAX_PROBLEMS]
    return [
        *problems[:MAX_PROBLEMS],
        Problem(last.source, None, "(more)", f"{rest} more problems not shown"),
    ]


def _guard(source: str, build: Callable[[], Scenario]) -> Scenario:
    try:
        return build()
    except ConfigError:
        raise
    except Exception as exc:  # last line of defence: bad input must never give a traceback
        message = _one_line(f"cannot load the scenario: {type(exc).__name__}: {exc}")
        raise ConfigError.single(source, "(top level)", message) from exc


def load_scenario_text(text: str, source: str = "<string>") -> Scenario:
    """Load a scenario from YAML text; raise ConfigError (only) for bad input."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ConfigError.single(
                source, "(file)", f"not UTF-8 text (bad byte at offset {exc.start})"
            ) from None
    if not isinstance(text, str):
        raise ConfigError.single(source, "(file)", f"expected YAML text, got {show(text)}")
    return _guard(source, lambda: _build(text=text, base=None, source=source, overrides=()))


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Load a scenario file; raise ConfigError (only) for a missing, unreadable or bad file."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise ConfigError.single(source, "(file)", "file not found") from None
    except IsADirectoryError:
        raise ConfigError.single(source, "(file)", "is a directory, not a scenario file") from None
    except PermissionError:
        raise ConfigError.single(source, "(file)", "permission denied") from None
    except OSError as exc:
        raise ConfigError.single(
            source, "(file)", f"cannot read the file: {exc.strerror or exc}"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError.single(
            source, "(file)", f"not UTF-8 text (bad byte at offset {exc.start})"
        ) from None
    return load_scenario_text(text, source)


# --------------------------------------------------------------------------------------------
# Overrides


def _path_steps(path: str) -> list[str | int]:
    if not isinstance(path, str) or not path.strip():
        raise ValueError(
            "empty override path; use a dotted path like hosts.count or guests.0.count"
        )
    normalized = re.sub(r"\[(\d+)\]", r".\1", path.strip())
    steps: list[str | int] = []
    for part in normalized.split("."):
        if part == "":
            raise ValueError(f"malformed path {path!r}; use a dotted path like guests.0.count")
        steps.append(int(part) if part.isdigit() else part)
    return steps


def set_path(data: dict[str, Any], path: str, value: Any) -> Loc:
    """Set ``value`` at a dotted ``path`` (``hosts.count``, ``guests.0.count``) inside ``data``.

    Numeric parts index lists (``guests[0]`` is accepted too); missing mappings along the path
    are created. Containers along the path are copied before they are changed, so data shared
    through YAML aliases is not changed elsewhere. Returns the path as a tuple of keys and
    indices. Raises ValueError with a readable message when the path cannot be followed.
    """
    steps = _path_steps(path)
    if not isinstance(data, dict):
        raise ValueError(f"cannot set {path}: the scenario is not a mapping")
    node: Any = data
    for depth, step in enumerate(steps[:-1]):
        where = ".".join(str(s) for s in steps[: depth + 1])
        if isinstance(node, dict):
            child = node.get(step)
            if child is None:
                child = {}
            elif isinstance(child, dict):
                child = dict(child)
            elif isinstance(child, list):
                child = list(child)
            else:
                raise ValueError(f"cannot set {path}: {where} is {show(child)}, not a mapping")
            node[step] = child
        elif isinstance(node, list):
            if not isinstance(step, int):
                raise ValueError(f"cannot set {path}: {where} needs a list index like 0")
            if not 0 <= step < len(node):
                raise ValueError(
                    f"cannot set {path}: index {step} is out of range "
                    f"(there are {len(node)} entries)"
                )
            child = node[step]
            if isinstance(child, dict):
                child = dict(child)
            elif isinstance(child, list):
                child = list(child)
            else:
                raise ValueError(f"cannot set {path}: {where} is {show(child)}, not a mapping")
            node[step] = child
        node = child
    last = steps[-1]
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list):
        if not isinstance(last, int):
            raise ValueError(f"cannot set {path}: the last part must be a list index like 0")
        if not 0 <= last < len(node):
            raise ValueError(
                f"cannot set {path}: index {last} is out of range (there are {len(node)} entries)"
            )
        node[last] = value
    return tuple(steps)


def _override_value(value: Any) -> Any:
    """Strings that look like YAML flow collections (``[a, b]``, ``{k: v}``) are parsed."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return yaml.safe_load(value)
        except Exception as exc:
            why = getattr(exc, "problem", None) or exc
            raise ValueError(f"cannot parse {show(value)} as YAML: {_one_line(str(why))}") from None
    return value


def apply_overrides(
    scenario: Scenario,
    overrides: Mapping[str, str | int | float],
    source: str = "command line",
) -> Scenario:
    """Apply ``path -> value`` overrides to the scenario's raw input and validate again.

    Values are used as given (the model parses ``"8GiB"`` or ``"42"``); a string starting with
    ``[`` or ``{`` is read as YAML. Problems inside an overridden path are reported as
    ``command line: PATH: MESSAGE``; others keep their file location.
    """
    added: list[tuple[str, Any, str]] = []
    problems: list[Problem] = []
    for path, value in overrides.items():
        try:
            added.append((path, _override_value(value), source))
        except ValueError as exc:
            problems.append(Problem(source, None, str(path), str(exc)))
    if problems:
        raise ConfigError(problems)
    if not added:
        return scenario
    text = scenario._text
    base = scenario._base
    if text is None and base is None:
        base = scenario.model_dump(mode="json", exclude_unset=True)
    origin = scenario._source
    return _guard(
        source,
        lambda: _build(
            text=text, base=base, source=origin, overrides=(*scenario._overrides, *added)
        ),
    )
