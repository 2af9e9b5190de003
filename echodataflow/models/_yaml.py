"""YAML loading that remembers the line of every key, for error messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]


class _LineLoader(yaml.SafeLoader):
    """A safe loader whose mappings refuse duplicate keys."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


def _construct_timestamp(loader: _LineLoader, node: yaml.ScalarNode) -> Any:
    # A date-like scalar that is no real date (2024-13-01) makes PyYAML raise a bare
    # ValueError, which carries no line; turn it into a located YAML error.
    try:
        return loader.construct_yaml_timestamp(node)
    except ValueError as err:
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.value!r} is not a valid date: {err}", node.start_mark
        ) from err


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)
_LineLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, str(key_node.value))
            lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines)


def load_yaml_with_lines(text: str) -> tuple[Any, dict[KeyPath, int]]:
    """Parse YAML text into Python data and a map of key path to line number.

    Raises
    ------
    yaml.YAMLError
        When the text is not valid YAML or a mapping repeats a key.
    """
    data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return data, lines


def key_at(text: str, line: int, column: int) -> KeyPath:
    """Return the key path of the YAML key or value at a 0-based line and column.

    Used to name the key of an error the YAML parser locates by position only (a
    duplicate key, a bad date). Falls back to the deepest key on that line, else
    ``()``.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return ()
    exact: list[KeyPath] = []
    on_line: list[KeyPath] = []

    def visit(node: yaml.Node, path: KeyPath) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = (*path, str(key_node.value))
                marks = (key_node.start_mark, value_node.start_mark)
                if any((m.line, m.column) == (line, column) for m in marks):
                    exact.append(child)
                if key_node.start_mark.line == line:
                    on_line.append(child)
                visit(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                visit(item, (*path, index))

    if node is not None:
        visit(node, ())
    return max(exact or on_line, key=len, default=())


def line_of(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """Return the line of ``path`` or of its nearest ancestor present in the file."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def read_text(path: str | Path) -> str:
    """Read a configuration file as text."""
    return Path(path).read_text(encoding="utf-8")
