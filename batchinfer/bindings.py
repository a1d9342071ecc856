"""From a pipeline step's bindings to what its command or arguments read: local paths and text.

``${{inputs.X}}`` is the input's local path (an upstream ``uri_file`` port is its file,
a folder port its folder) or its literal value; ``${{outputs.X}}`` is the port's folder;
a ``$[[...]]`` part of a command is dropped when an input it names is not bound.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from batchinfer.errors import SpecError
from batchinfer.pipeline import OPTIONAL_PART, REF, Binding, Pipeline, Port, Step

DEFAULT_ROW_FILE = "parallel_run_step.txt"  # only until the step's spec can be read: see row_file_name


def input_path(pipeline: Pipeline, binding: Binding) -> str:
    """The local path (or URL) an input reads: an upstream port's path (see :func:`port_path`), or its own."""
    port = pipeline.port_of(binding)
    return binding.value if port is None else str(port_path(pipeline, pipeline.steps[port.step], port))


def port_path(pipeline: Pipeline, producer: Step, port: Port) -> Path:
    """What a port stands for: a ``uri_file`` port its file (the rows of a parallel step under the name its
    job spec gives them, see :func:`row_file_name`, else the port's own file name, else the port's name),
    any other port its folder."""
    if port.type != "uri_file":
        return port.folder
    return port.file(row_file_name(pipeline, producer) if append_port(producer) == port.name else port.name)


def append_port(step: Step) -> str | None:
    """The port a parallel step appends its rows to (``task.append_row_to``)."""
    target = str(step.node.get("task", {}).get("append_row_to") or "") if step.type == "parallel" else ""
    found = REF.fullmatch(target.strip())
    return found.group(1).split(".", 1)[1] if found and found.group(1).startswith("outputs.") else None


def row_file_name(pipeline: Pipeline, step: Step) -> str:
    """The append-row file's name, as the step's validated job spec has it (the port's Azure path,
    ``--append_row_file_name``, ``--set``). Before the step can be planned (an input it reads is made
    by an earlier step), only for the checks made before the run: its default name."""
    if step.row_file is None:
        from batchinfer.steps import parallel_spec

        try:
            step.row_file = parallel_spec(pipeline, step, pipeline.overrides)[0].append_row_file_name
        except SpecError:
            return DEFAULT_ROW_FILE
    return step.row_file


def substitute(pipeline: Pipeline, step: Step, text: str, where: str) -> str:
    """``${{inputs.X}}`` / ``${{outputs.X}}`` in ``text`` replaced: a path as one shell word (see :func:`shell_word`),
    a literal value written in the YAML as written (as Azure does), one given with ``--input`` as one word;
    a ``$[[...]]`` part is dropped when an input it names is not bound."""

    def absent(part: str) -> bool:
        return any(m.group(1).startswith("inputs.") and m.group(1)[7:] not in step.inputs for m in REF.finditer(part))

    text = OPTIONAL_PART.sub(lambda m: "" if absent(m.group(1)) else m.group(1), text)
    quotes = quote_states(text)

    def value(match: Any) -> str:
        ref = match.group(1)
        kind, _, name = ref.partition(".")
        quote = quotes[match.start()]
        if kind == "inputs":
            if name not in step.inputs:
                raise SpecError(f"{where}: ${{{{inputs.{name}}}}} is not bound",
                                hint=f"give it in the step's inputs, or bind it with --input {step.key}.{name}=PATH")
            binding = step.inputs[name]
            if not binding.is_path and not binding.from_command_line:
                return binding.value  # a YAML literal: the pipeline's author wrote it for the shell
            return shell_word(binding.value if not binding.is_path else input_path(pipeline, binding), quote)
        if kind == "outputs":
            if name not in step.outputs:
                raise SpecError(f"{where}: ${{{{outputs.{name}}}}} names no output of step {step.key!r}",
                                hint=f"its outputs: {', '.join(step.outputs) or 'none'}")
            port = step.outputs[name]  # a parallel step's script writes into the port's folder
            return shell_word(str(port_path(pipeline, step, port) if step.type == "command" else port.folder), quote)
        return match.group(0)  # ${{name}} and the like were resolved when the file was read

    return REF.sub(value, text)


def quote_states(text: str) -> list[str]:
    """For each character of a shell command, the quotes it is inside: ``'``, ``"`` or none (``""``)."""
    states, state, escaped = [], "", False
    for ch in text:
        states.append(state)
        if escaped:
            escaped = False
        elif state == "'":
            state = "" if ch == "'" else state
        elif ch == "\\":
            escaped = True
        elif state == '"':
            state = "" if ch == '"' else state
        elif ch in "'\"":
            state = ch
    return states


def shell_word(value: str, quote: str) -> str:
    """``value`` written so that the shell reads it as that exact text: quoted when outside quotes, escaped
    inside the user's own double quotes (``"``, ``\\``, ``$``, backquote), inside single quotes closed and
    reopened around a ``'``."""
    if quote == '"':
        return "".join("\\" + ch if ch in '"\\$`' else ch for ch in value)
    if quote == "'":
        return value.replace("'", "'\\''")
    return shlex.quote(value)
