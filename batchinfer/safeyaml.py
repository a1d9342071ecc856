"""Reading untrusted job files: YAML as plain data within limits, and files that must be regular.

A job spec, a ``--set`` value or an MLTable file may come from a careless or hostile hand:
an alias bomb, nesting deep enough to exhaust Python's recursion limit, a 5,000-digit number,
``/dev/zero`` or a FIFO as the path. Everything here fails at once with a message that says
where (line and column) and how to fix it; nothing a YAML text says is ever executed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

# Limits: a real job spec is a few kilobytes with a few hundred values, nested a few levels.
MAX_SPEC_BYTES = 2 * 1024**2  # parsing YAML in pure Python takes about 1 s per MB
MAX_DEPTH = 64  # levels of nesting, aliases expanded
MAX_VALUES = 100_000  # keys, items and scalars, each alias counted as what it expands to
MAX_NUMBER_CHARS = 100  # digits of a YAML number (0x... too), anywhere in the spec


def shown(value: Any, width: int = 60) -> str:
    """``repr(value)`` cut to ``width`` characters, for messages that quote what the user wrote."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (Python refuses more than 4300 digits)
        text = f"a number of {value.bit_length()} bits" if isinstance(value, int) else type(value).__name__
    return text if len(text) <= width else text[: width - 3] + "..."


class YamlLimitError(yaml.MarkedYAMLError):
    """A YAML text that is valid but past a limit of a job spec (nesting, expanded size)."""

    def __init__(self, problem: str, mark: yaml.Mark | None, hint: str) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.hint = hint


class _SpecLoader(yaml.SafeLoader):
    """The loader of job specs and ``--set`` values: PyYAML's SafeLoader (no tag builds a Python
    object) that also refuses a key given twice, nesting past MAX_DEPTH (before Python's recursion
    limit is met) and a document whose aliases expand past MAX_VALUES (a 'billion laughs' builds
    in microseconds as shared lists, but everything that walks it afterwards takes minutes)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlLimitError(
                    f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark,
                    hint="a job spec nests a few levels; check the brackets",
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _check_expansion(node)
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:  # e.g. a date 2024-13-45, a 5000-digit number
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown(node.value)}: {exc}", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        # PyYAML keeps the last of a key written twice; in a job spec that hides a mistake
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (list, dict, set)):  # '[1]: x' or '{a: 1}: x': no key can be that
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be text or a number, not a {type(key).__name__}", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {shown(key)} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        # a number no key can take, and that Python cannot even print (past 4300 digits: ValueError)
        if len(node.value) > MAX_NUMBER_CHARS:
            raise YamlLimitError(f"a number of {len(node.value)} characters", node.start_mark,
                                 hint=f"numbers in a job spec have at most {MAX_NUMBER_CHARS} digits")
        return super().construct_yaml_int(node)


_SpecLoader.add_constructor("tag:yaml.org,2002:int", _SpecLoader.construct_yaml_int)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph that, aliases expanded, holds more than MAX_VALUES values or nests deeper
    than MAX_DEPTH, or that contains itself. Each distinct node is measured once (an alias is the
    node it names), so this takes time in proportion to the text, not to what it expands to."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once expanded
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        if children_done:
            values = 1 + sum(measured[id(c)][0] for c in children)
            depth = 1 + max((measured[id(c)][1] for c in children), default=0)
            open_nodes.discard(id(node))
            measured[id(node)] = (values, depth)
            if values > MAX_VALUES:
                raise YamlLimitError(
                    f"this holds more than {MAX_VALUES} values once its aliases (*name) are expanded",
                    node.start_mark, hint="a job spec has a few hundred values; give many inputs as a folder or glob",
                )
            if depth > MAX_DEPTH:
                raise YamlLimitError(
                    f"this nests deeper than {MAX_DEPTH} levels once its aliases (*name) are expanded",
                    node.start_mark, hint="a job spec nests a few levels",
                )
            continue
        if id(node) in measured:
            continue
        if id(node) in open_nodes:
            raise YamlLimitError(
                "an alias (*name) refers to a collection that contains it", node.start_mark,
                hint="a job spec cannot contain itself",
            )
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in children)


def load_yaml_text(text: str) -> Any:
    """Parse one YAML document with the spec's loader; raises ``yaml.YAMLError`` (marked where possible)."""
    if len(text) > MAX_SPEC_BYTES:
        raise YamlLimitError(
            f"{len(text)} characters is more than a job spec may hold ({MAX_SPEC_BYTES // 1024**2} MB)",
            None, hint="give many inputs as a folder or glob",
        )
    return yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_error_text(exc: yaml.YAMLError, text: str) -> tuple[str, str]:
    """One line for a YAML error: (where and what, hint); PyYAML's own text spans several lines."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        name = "a NUL byte" if char == "\0" else f"the character U+{ord(char):04X}"
        return f" line {line}: {name} is not allowed in YAML", "save the spec as plain UTF-8 text"
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark and exc.problem:
            problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
        if "constructor for the tag" in problem:
            return f"{where}: {problem}", "a job spec holds plain values: tags such as !!python/object are not allowed"
        return f"{where}: {problem}", getattr(exc, "hint", "fix the YAML syntax")
    return f": invalid YAML: {' '.join(str(exc).split())}", "fix the YAML syntax"


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages: 'a folder', 'a named pipe (FIFO)', ..."""
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


class NotRegularFileError(ValueError):
    """A path given as a file is a folder, a device (/dev/zero never ends), a FIFO (blocks) or a socket."""


class FileTooLargeError(ValueError):
    """A file is larger than what batchinfer reads of that kind of file."""


def read_capped(path: Path, limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path`` of at most ``limit`` bytes.

    Raises :class:`NotRegularFileError` or :class:`FileTooLargeError` (saying what it is,
    e.g. "is a folder, not a job spec"), or ``OSError`` as ``open`` does (no such file,
    no permission, a symlink loop). Nothing but a regular file is opened.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFileError(f"is {file_kind(info.st_mode)}, not {what}")
    with open(path, "rb") as handle:  # the size is checked again while reading: the file may grow
        data = handle.read(limit + 1)
    if info.st_size > limit or len(data) > limit:
        raise FileTooLargeError(f"is larger than {limit // 1024**2} MB, more than {what} may be")
    return data
