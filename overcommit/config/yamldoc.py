"""YAML parsing that keeps line numbers: `_Document` finds the line of a path; `_parse_yaml`
reports syntax errors, duplicate keys and a non-mapping document as located problems."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from overcommit.config.common import Loc, Problem, _field
from overcommit.units import show


class _Document:
    """Parsed YAML: the Python data plus the node graph for finding the line of a path."""

    def __init__(self, data: Any, root: yaml.Node) -> None:
        self.data = data
        self.root = root
        self._constructor = yaml.constructor.SafeConstructor()

    def _key(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return None
        try:
            return self._constructor.construct_object(node, deep=True)
        except Exception:
            return node.value

    def line(self, loc: Loc) -> int:
        """1-based line of the deepest node that exists on ``loc``.

        Stepping into a mapping uses the line of the key; into a sequence, the item's line.
        """
        node = self.root
        line = node.start_mark.line + 1
        for item in loc:
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in reversed(node.value):
                    key = self._key(key_node)
                    if type(key) is type(item) and key == item:
                        line = key_node.start_mark.line + 1
                        node = value_node
                        break
                else:
                    break
            elif (
                isinstance(node, yaml.SequenceNode)
                and type(item) is int
                and 0 <= item < len(node.value)
            ):
                node = node.value[item]
                line = node.start_mark.line + 1
            else:
                break
        return line


def _yaml_problem(exc: Exception, source: str, text: str) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = None
    if mark is not None:
        line_count = max(1, len(text.splitlines()))
        line = min(mark.line + 1, line_count)
    if isinstance(exc, yaml.MarkedYAMLError):
        problem, context = exc.problem or "", exc.context or ""
        if problem.startswith("but ") or not problem:
            problem, context = f"{context} {problem}".strip(), ""
        message = problem
        if exc.problem_mark is not None:
            message += f" at column {exc.problem_mark.column + 1}"
        if context:
            start = exc.context_mark
            where = f" started on line {start.line + 1}" if start is not None else ""
            message += f" ({context}{where})"
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, max(0, exc.position)) + 1
        message = str(exc).splitlines()[0]
    elif isinstance(exc, yaml.YAMLError):
        message = str(exc)
    elif isinstance(exc, RecursionError):
        message = "the document is nested too deeply"
    else:
        message = f"cannot read the YAML: {exc}"
    message = " ".join(message.split()) or type(exc).__name__
    return Problem(source, line, "(yaml)", f"invalid YAML: {message}")


def _duplicate_keys(root: yaml.Node, document_key: Callable[[yaml.Node], Any]) -> list[Loc]:
    """Paths of keys given twice in one mapping (before merge keys are expanded)."""
    found: list[Loc] = []
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, Loc]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[tuple[str, str]] = set()
            for key_node, value_node in node.value:
                key = document_key(key_node)
                if (
                    isinstance(key_node, yaml.ScalarNode)
                    and key_node.tag != "tag:yaml.org,2002:merge"
                ):
                    ident = (key_node.tag, key_node.value)
                    if ident in keys:
                        found.append((*path, key))
                    keys.add(ident)
                stack.append((value_node, (*path, key)))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                stack.append((item, (*path, index)))
    return found


class _Loader(yaml.SafeLoader):
    """SafeLoader whose value errors (a bad date, a huge number) carry the node's position."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value {show(node.value)}: {exc}", node.start_mark
            ) from None


def _parse_yaml(text: str, source: str) -> tuple[_Document | None, list[Problem]]:
    """Parse text; return the document (None when unusable) and any problems found."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        root = loader.get_single_node()
        if root is None:
            return None, [
                Problem(
                    source,
                    None,
                    "(top level)",
                    "the file is empty; expected a scenario (name, duration, hosts, guests, ...)",
                )
            ]
        document = _Document(None, root)
        duplicates = _duplicate_keys(root, document._key)
        document.data = loader.construct_document(root)
    except Exception as exc:  # YAMLError, and e.g. ValueError from a bad timestamp
        return None, [_yaml_problem(exc, source, text)]
    finally:
        if loader is not None:
            loader.dispose()
    problems = [
        Problem(source, document.line(loc), _field(loc), "key given twice (the last one counts)")
        for loc in duplicates
    ]
    if not isinstance(document.data, dict):
        kind = _kind_of(document.data)
        problems.append(
            Problem(
                source,
                root.start_mark.line + 1,
                "(top level)",
                f"expected a mapping of scenario keys (name, duration, hosts, guests, ...), "
                f"got {kind}",
            )
        )
        return None, problems
    return document, problems


def _kind_of(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text {show(value)}"
    if value is None:
        return "nothing"
    return show(value)
