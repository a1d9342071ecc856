"""Azure ML ``type: pipeline`` YAML: read it, its ``component:`` files and its bindings, into steps in run order.

A pipeline is a set of ``jobs:`` (steps) that pass data through their output
ports: ``${{parent.jobs.S.outputs.Y}}`` makes step S run first. This module
only reads and binds (nothing runs here, see :mod:`batchinfer.steps`):

- every step gets a run folder ``<output>/<step>/`` and each of its output
  ports a data-only folder ``<output>/<step>/outputs/<port>/`` (or the local
  ``path:`` bound to it), as DESIGN.md section 5 lays out;
- ``${{parent.inputs.X}}``, ``${{parent.outputs.X}}``, ``${{parent.jobs.S.outputs.Y}}``,
  ``${{name}}`` and ``${{default_datastore}}`` are resolved to local paths or text;
- ``--input [STEP.]NAME=PATH`` binds any input to a local path or URL, which cuts
  the step off its upstream step (a step left feeding nobody is skipped);
- cloud-only fields are accepted and ignored; anything that cannot run here is one line.

A standalone ``type: parallel`` file is a one-step pipeline whose step run folder
is the output folder itself.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchinfer import azure
from batchinfer.errors import SpecError, UsageError
from batchinfer.layout import file_name_problem
from batchinfer.redact import redact_url
from batchinfer.spec import is_url, normalise_name, read_yaml
from batchinfer.statefiles import shown

PIPELINE_FILE = "pipeline.json"  # <output>/pipeline.json: the status of every step
DEFAULT_DATASTORE = "workspaceblobstore"  # what ${{default_datastore}} reads as (Azure's default)
REF = re.compile(r"\$\{\{\s*([^{}]*?)\s*\}\}")
OPTIONAL_PART = re.compile(r"\$\[\[(.*?)\]\]", re.S)  # a part of a command dropped when its input is absent
PARENT_INPUT = re.compile(r"parent\.inputs\.([A-Za-z_][A-Za-z0-9_]*)")
PARENT_OUTPUT = re.compile(r"parent\.outputs\.([A-Za-z_][A-Za-z0-9_]*)")
PARENT_JOB = re.compile(r"parent\.jobs\.([A-Za-z0-9_-]+)\.outputs\.([A-Za-z_][A-Za-z0-9_]*)")
# keys that only make sense in the cloud: read and ignored wherever they appear
CLOUD_KEYS = azure.IGNORED_KEYS | {"compute", "environment", "settings", "mode", "resources", "identity",
                                   "limits", "services", "distribution", "queue_settings", "additional_includes"}
PIPELINE_KEYS = CLOUD_KEYS | {"type", "name", "inputs", "outputs", "jobs", "default_compute", "default_datastore",
                              "continue_on_step_failure"}
STEP_KEYS = CLOUD_KEYS | {"type", "name", "component", "inputs", "outputs", "environment_variables"}
COMMAND_KEYS = STEP_KEYS | {"command", "code"}
PARALLEL_KEYS = STEP_KEYS | azure.KNOWN_KEYS
RUNNABLE = ("command", "parallel")
DATA_TYPES = {"uri_file", "uri_folder", "mltable", "custom_model", "mlflow_model", "triton_model"}
NOT_HERE = {"sweep", "automl", "spark", "pipeline", "data_transfer", "import", "flow"}


@dataclass
class Port:
    """An output port: a data-only folder, and for a ``uri_file`` port the file's name in it."""

    step: str
    name: str
    type: str
    folder: Path
    file_name: str | None = None  # Azure's name for the file (from the port's path), when it gives one
    azure_path: str | None = None  # the azureml:// path this local folder stands for
    own: bool = True  # batchinfer's folder under the output (emptied when the step starts afresh); False: a user's path:

    def file(self, default: str) -> Path:
        """The port's file (a ``uri_file`` port read downstream): its own name, else ``default``."""
        return self.folder / (self.file_name or default)


@dataclass
class Binding:
    """What an input of a step is bound to: a local path or URL, or literal text."""

    value: str
    is_path: bool
    type: str | None = None
    source: tuple[str, str] | None = None  # (step, port) that produces it
    from_command_line: bool = False


@dataclass
class Step:
    """One job of the pipeline, merged with its component, with its inputs and outputs bound."""

    key: str
    type: str
    node: dict[str, Any]  # the merged job node (component defaults overridden by the job's own keys)
    base_dir: Path  # relative paths of the node are relative to this folder
    code_dir: Path | None
    folder: Path  # the run folder: summary, logs, state
    inputs: dict[str, Binding] = field(default_factory=dict)
    outputs: dict[str, Port] = field(default_factory=dict)
    row_file: str | None = None  # a parallel step's append-row file name, from its validated job spec
    # inputs that the YAML binds to an upstream step and --input binds instead: (step, port) as the YAML has it
    cut_sources: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def upstream(self) -> list[str]:
        """The steps whose outputs this step reads."""
        return sorted({b.source[0] for b in self.inputs.values() if b.source})


@dataclass
class Pipeline:
    """A pipeline read and bound: its steps in run order, and the steps left out (with why)."""

    path: Path
    name: str
    root: Path
    steps: dict[str, Step]
    standalone: bool
    skipped: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)  # --set [STEP.]KEY=VALUE: they decide a step's row file name

    def port_of(self, binding: Binding) -> Port | None:
        """The upstream port an input reads, if it reads one."""
        return self.steps[binding.source[0]].outputs[binding.source[1]] if binding.source else None


def is_pipeline(data: dict[str, Any]) -> bool:
    """True for an Azure ML pipeline YAML, or a standalone parallel job (a one-step pipeline)."""
    return data.get("type") == "pipeline" or azure.is_azure_job(data)


def _check_keys(data: dict[str, Any], known: set[str], where: str) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
            usable = ", ".join(sorted(k for k in known if k not in CLOUD_KEYS))
            hint = f"did you mean '{close[0]}'?" if close else f"known: {usable}"
            raise SpecError(f"unknown key '{shown(key)}' in {where}", hint=hint)


def _globals(value: Any, name: str) -> Any:
    """``${{name}}`` and ``${{default_datastore}}`` replaced in every string of ``value``."""
    if isinstance(value, dict):
        return {k: _globals(v, name) for k, v in value.items()}
    if isinstance(value, list):
        return [_globals(v, name) for v in value]
    if isinstance(value, str) and "${{" in value:
        known = {"name": name, "default_datastore": DEFAULT_DATASTORE}
        return REF.sub(lambda m: known.get(m.group(1), m.group(0)), value)
    return value


def _local(path: str, base: Path) -> str:
    """A local path made absolute against ``base``; URLs as they are."""
    if "\0" in path:
        raise SpecError(f"{shown(path)} contains a NUL byte, which no path can hold")
    if path.startswith("file://"):
        path = path[len("file://"):]
    return path if is_url(path) else os.path.normpath(base / os.path.expanduser(path))


def parse_bindings(items: list[str]) -> dict[tuple[str | None, str], str]:
    """``--input [STEP.]NAME=PATH_OR_URL`` items: {(step or None, name): value} (a path is made absolute
    where it binds a data input: a literal input such as ``partition_keys`` takes the text as it is)."""
    found: dict[tuple[str | None, str], str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value:
            raise UsageError(f"--input {shown(item)}: expected [STEP.]NAME=PATH_OR_URL",
                             hint="for example --input predict.job_data_path=./data")
        step, dot, name = key.strip().rpartition(".")
        found[(step if dot else None, name)] = value
    return found


def _bound(value: str, kind: str | None, was_path: bool) -> Binding:
    """A value given with --input: a local path or URL for a data input, else literal text."""
    is_path = was_path or (kind in DATA_TYPES)
    return Binding(_local(value, Path.cwd()) if is_path else value, is_path, kind, from_command_line=True)


def load_pipeline(
    path: Path, output: str | None = None, bindings: list[str] | None = None, only_step: str | None = None,
) -> Pipeline:
    """Read ``path`` and bind it: steps in dependency order, their folders under ``output``
    (default ``./outputs/<pipeline name>``). Raises :class:`SpecError` (one line) for what cannot run."""
    data = read_yaml(path)
    try:
        return _load(path, data, output, parse_bindings(bindings or []), only_step)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc.message}", hint=exc.hint) from None


def _load(path: Path, data: dict[str, Any], output: str | None, cli: dict[tuple[str | None, str], str],
          only_step: str | None) -> Pipeline:
    base = path.resolve().parent
    standalone = azure.is_azure_job(data)
    if not standalone and data.get("type") != "pipeline":
        raise SpecError("not an Azure ML pipeline (type: pipeline) or parallel job (type: parallel with a task)")
    raw_name = data.get("name") or path.stem
    if not isinstance(raw_name, (str, int, float)) or isinstance(raw_name, bool):
        raise SpecError(f"name: {shown(raw_name)} is not a name (text)", hint="give the pipeline a name such as my-pipeline")
    name = normalise_name(str(raw_name))
    if output and "://" in str(output):  # a remote output folder is for one job (batchinfer.remote_output)
        raise UsageError(f"--output {redact_url(str(output))}: an Azure ML pipeline or parallel job needs a local "
                         "output folder; an object store is supported for a batchinfer job spec",
                         hint="give --output a local folder")
    root = Path(output or Path("outputs") / name).absolute()
    if standalone:  # one step; --input NAME=PATH binds the job's own input
        jobs = {name: {k: v for k, v in data.items() if k != "name"}}
        parent_inputs: dict[str, Binding] = {}
        parent_outputs: dict[str, Any] = {}
        cli = {(name if step is None else step, n): v for (step, n), v in cli.items()}
    else:
        _check_keys(data, PIPELINE_KEYS, "an Azure ML pipeline")
        jobs = azure.as_mapping(data.get("jobs"), "jobs")
        if not jobs:
            raise SpecError("'jobs' lists no step", hint="a pipeline needs at least one job under 'jobs:'")
        parent_inputs = {k: _pipeline_input(k, v, base) for k, v in azure.as_mapping(data.get("inputs"), "inputs").items()}
        parent_outputs = azure.as_mapping(_globals(data.get("outputs"), name), "outputs")
    for (step, input_name), value in cli.items():
        if step is None:
            if input_name not in parent_inputs:
                raise UsageError(f"--input {input_name}=...: the pipeline has no input {input_name!r}",
                                 hint=f"its inputs: {', '.join(parent_inputs) or 'none'}; "
                                 "bind a step's input as STEP.NAME=PATH")
            before = parent_inputs[input_name]
            parent_inputs[input_name] = _bound(value, before.type, before.is_path)
        elif step not in jobs:
            raise UsageError(f"--input {step}.{input_name}=...: the pipeline has no step {step!r}",
                             hint=f"its steps: {', '.join(map(str, jobs))}")
    steps: dict[str, Step] = {}
    for key, node in jobs.items():
        key = str(key)
        where = f"jobs.{key}"
        if not standalone and (problem := file_name_problem(key) or _reserved(key)):
            raise SpecError(f"{where}: the step name {shown(key)} {problem}",
                            hint="rename the step: it names its folder")
        folder = root if standalone else root / key
        steps[key] = _step(key, _globals(azure.as_mapping(node, where), name), base, folder, parent_inputs, parent_outputs,
                           {n: v for (s, n), v in cli.items() if s == key}, standalone, name)
    pipeline = Pipeline(path, name, root, steps, standalone)
    _check_references(pipeline)
    consumers_before = _consumers(pipeline, count_cli=True)
    consumers_after = _consumers(pipeline, count_cli=False)
    for key in steps:
        if consumers_before[key] and not consumers_after[key] and key != only_step:
            pipeline.skipped[key] = "every output it makes is bound with --input instead"
    if only_step is not None:
        if only_step not in steps:
            raise UsageError(f"--step {only_step}: the pipeline has no step {only_step!r}",
                             hint=f"its steps: {', '.join(steps)}")
        pipeline.skipped.update({k: "--step runs one step alone" for k in steps if k != only_step})
    pipeline.steps = {k: steps[k] for k in _order(steps)}
    return pipeline


def _reserved(key: str) -> str | None:
    if key.casefold() == PIPELINE_FILE or key.startswith("."):
        return "is a name batchinfer keeps for itself in the pipeline's output folder"
    return None


def _pipeline_input(key: str, value: Any, base: Path) -> Binding:
    where = f"inputs.{key}"
    if isinstance(value, dict):
        if "path" in value:
            return _path_binding(value["path"], value.get("type"), where, f"--input {key}=PATH", base)
        value = value.get("default", value.get("value"))
    return Binding("" if value is None else _scalar(value, where), False)


def _scalar(value: Any, where: str, what: str = "a value an input can hold (text, a number, a boolean or a path)") -> str:
    """A YAML scalar as text (a boolean as Azure writes it); anything else is one line naming the field."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, int, float)):
        return str(value)
    raise SpecError(f"{where}: {shown(value)} is not {what}")


def _path_binding(raw: Any, kind: Any, where: str, flag: str, base: Path) -> Binding:
    path = _scalar(raw, f"{where}.path", "a path")
    if path.startswith("azureml:"):
        raise SpecError(f"{where}.path: {shown(path)} is an Azure ML asset or path, which batchinfer cannot read",
                        hint=f"download it and bind it here with {flag}")
    return Binding(_local(path, base), True, str(kind) if kind else None)


def _runnable(kind: str, where: str) -> str:
    """``kind`` when batchinfer can run a step of that type; else one line naming the step."""
    if kind == "pipeline":
        raise SpecError(f"{where}: a pipeline step (a pipeline inside this pipeline) cannot run here yet",
                        hint="run its own pipeline YAML with batchinfer run, then bind its output here with --input")
    if kind in NOT_HERE or kind not in RUNNABLE:
        raise SpecError(f"{where}: a step of type '{shown(kind)}' cannot run on this machine",
                        hint="batchinfer runs command and parallel steps; run that step in Azure ML")
    return kind


def _component(key: str, node: dict[str, Any], base: Path) -> tuple[dict[str, Any], Path]:
    """The component a job node names (its content and folder), or an empty one."""
    ref = node.get("component")
    if ref is None:
        return {}, base
    if isinstance(ref, dict):  # an inline component
        return ref, base
    ref = str(ref)
    if ref.startswith("azureml:") or ref.startswith("azureml://"):
        raise SpecError(f"jobs.{key}.component: {shown(ref)} is a component registered in Azure ML, "
                        "which cannot run here",
                        hint="give its YAML file instead (component: ./file.yml)")
    file = (base / ref).resolve()
    if file.is_dir():
        raise SpecError(f"jobs.{key}.component: {shown(ref)} is a folder, not a component YAML file",
                        hint="name the component's YAML file (component: ./folder/component.yml)")
    if not file.is_file():
        raise SpecError(f"jobs.{key}.component: {shown(ref)}: no such file",
                        hint="the path is relative to the pipeline YAML")
    return read_yaml(file), file.parent


def _step(key: str, node: dict[str, Any], base: Path, folder: Path, parent_inputs: dict[str, Binding],
          parent_outputs: dict[str, Any], cli: dict[str, str], standalone: bool, pipeline_name: str) -> Step:
    where = f"jobs.{key}" if not standalone else "job"
    if node.get("type"):  # what cannot run is said before a component file is looked for
        _runnable(str(node["type"]), where)
    component, comp_dir = _component(key, node, base)
    component = _globals(component, pipeline_name)
    kind = _runnable(str(node.get("type") or component.get("type") or "command"), where)
    if component:
        _check_keys(component, (COMMAND_KEYS if kind == "command" else PARALLEL_KEYS) | {"code", "is_deterministic"},
                    f"{where}.component")
    _check_keys(node, COMMAND_KEYS if kind == "command" else PARALLEL_KEYS,
                where if not standalone else "an Azure ML parallel job")
    merged = {k: v for k, v in component.items() if k not in ("inputs", "outputs", "name")}
    merged.update({k: v for k, v in node.items() if k not in ("inputs", "outputs", "component", "task")})
    if "task" in component or "task" in node:
        merged["task"] = {**azure.as_mapping(component.get("task"), f"{where}.component.task"),
                          **azure.as_mapping(node.get("task"), f"{where}.task")}
    _check_environment(merged.get("environment_variables"), f"{where}.environment_variables")
    code_dir = _code_dir(node, component, kind, base, comp_dir, where)
    step = Step(key, kind, merged, base, code_dir, folder)
    declared = azure.as_mapping(component.get("inputs"), f"{where}.component.inputs")
    given = azure.as_mapping(node.get("inputs"), f"{where}.inputs")
    for name in {**declared, **given}:
        decl = declared.get(name) if isinstance(declared.get(name), dict) else {}
        flag = f"--input {key}.{name}=PATH" if not standalone else f"--input {name}=PATH"
        if name in cli:
            step.inputs[name] = _rebound(step, name, cli[name], given.get(name), decl, parent_inputs)
        elif name in given:
            bound = _input(given[name], decl, f"{where}.inputs.{name}", flag, base, parent_inputs)
            if bound is not None:
                step.inputs[name] = bound
        elif "default" in decl:
            step.inputs[name] = Binding(_scalar(decl["default"], f"{where}.component.inputs.{name}.default"), False,
                                        decl.get("type"))
    for name in cli:
        if name not in step.inputs:
            raise UsageError(f"--input {key}.{name}=...: step {key!r} has no input {name!r}",
                             hint=f"its inputs: {', '.join(sorted({**declared, **given})) or 'none'}")
    out_declared = azure.as_mapping(component.get("outputs"), f"{where}.component.outputs")
    out_given = azure.as_mapping(node.get("outputs"), f"{where}.outputs")
    for name in {**out_declared, **out_given}:
        step.outputs[name] = _port(step, name, out_declared.get(name), out_given.get(name), parent_outputs, base)
    return step


def _check_environment(value: Any, where: str) -> None:
    """``environment_variables``: a mapping of names to text, numbers or booleans."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise SpecError(f"{where}: {shown(value)} is not a mapping of names to values",
                        hint="write it as NAME: value lines")
    for key, item in value.items():
        if item is not None:
            _scalar(item, f"{where}.{key}", "a value an environment variable can hold (text, a number or a boolean)")


def _rebound(step: Step, name: str, value: str, given: Any, decl: dict[str, Any],
             parent_inputs: dict[str, Binding]) -> Binding:
    """An input bound with ``--input``: a path where the YAML binds data (which cuts the step off the
    upstream step it named), the text itself where it binds a literal value such as ``partition_keys``."""
    raw = _raw_input(given)
    ref = REF.fullmatch(raw.strip()) if isinstance(raw, str) else None
    upstream = PARENT_JOB.fullmatch(ref.group(1)) if ref else None
    parent = PARENT_INPUT.fullmatch(ref.group(1)) if ref else None
    if upstream:
        step.cut_sources[name] = (upstream.group(1), upstream.group(2))
    kind = _type_of(given) or decl.get("type")
    was_path = bool(upstream) or (isinstance(given, dict) and "path" in given) or bool(
        parent and parent.group(1) in parent_inputs and parent_inputs[parent.group(1)].is_path)
    return _bound(value, kind, was_path)


def _raw_input(value: Any) -> Any:
    return value.get("path", value.get("default", value.get("value"))) if isinstance(value, dict) else value


def _type_of(value: Any) -> str | None:
    return str(value["type"]) if isinstance(value, dict) and value.get("type") else None


def _code_dir(node: dict[str, Any], component: dict[str, Any], kind: str, base: Path, comp_dir: Path,
              where: str) -> Path | None:
    """The step's code folder: the job's own ``code`` (relative to the pipeline), else the component's."""
    for owner, folder, field_ in ((node, base, where), (component, comp_dir, f"{where}.component")):
        holder = owner if kind == "command" else azure.as_mapping(owner.get("task"), "task")
        code = holder.get("code")
        if code is not None:
            field_ = f"{field_}.code" if kind == "command" else f"{field_}.task.code"
            code = _scalar(code, field_, "a folder path")
            if code.startswith("azureml:"):
                raise SpecError(f"{field_}: {shown(code)} is in Azure ML, which batchinfer cannot read",
                                hint="give the local folder of the code")
            return Path(_local(code, folder))
    return comp_dir if component else None


def _input(value: Any, decl: dict[str, Any], where: str, flag: str, base: Path,
           parent_inputs: dict[str, Binding]) -> Binding | None:
    kind = _type_of(value) or decl.get("type")
    raw = _raw_input(value)
    if raw is None:
        return None
    if isinstance(raw, str) and (ref := REF.fullmatch(raw.strip())):
        text = ref.group(1)
        if m := PARENT_INPUT.fullmatch(text):
            if m.group(1) not in parent_inputs:
                raise SpecError(f"{where}: ${{{{{text}}}}} names no input of the pipeline",
                                hint=f"its inputs: {', '.join(parent_inputs) or 'none'}")
            found = parent_inputs[m.group(1)]
            return Binding(found.value, found.is_path, kind or found.type, from_command_line=found.from_command_line)
        if m := PARENT_JOB.fullmatch(text):
            return Binding("", True, kind, source=(m.group(1), m.group(2)))
        raise SpecError(f"{where}: ${{{{{text}}}}} is not a binding batchinfer knows",
                        hint="use ${{parent.inputs.X}} or ${{parent.jobs.STEP.outputs.Y}}")
    if isinstance(value, dict) and "path" in value:
        return _path_binding(raw, kind, where, flag, base)
    return Binding(_scalar(raw, where), False, kind)


def _port(step: Step, name: str, declared: Any, given: Any, parent_outputs: dict[str, Any], base: Path) -> Port:
    where = f"jobs.{step.key}.outputs.{name}"
    spec = {**(declared if isinstance(declared, dict) else {}), **(given if isinstance(given, dict) else {})}
    ref = REF.fullmatch(given.strip()) if isinstance(given, str) else None
    for value, field_ in ((declared, f"jobs.{step.key}.component.outputs.{name}"), (given, where)):
        if value is not None and not isinstance(value, dict) and not (value is given and ref):
            raise SpecError(f"{field_}: {shown(value)} is not an output (a mapping such as {{type: uri_folder}}, "
                            "or ${{parent.outputs.NAME}})", hint="see Azure's pipeline YAML reference for outputs")
    if ref and (m := PARENT_OUTPUT.fullmatch(ref.group(1))):
        if m.group(1) not in parent_outputs:
            raise SpecError(f"{where}: ${{{{{ref.group(1)}}}}} names no output of the pipeline",
                            hint=f"its outputs: {', '.join(parent_outputs) or 'none'}")
        parent = parent_outputs[m.group(1)]
        spec = {**spec, **(parent if isinstance(parent, dict) else {})}
    kind = str(spec.get("type") or "uri_folder")
    default = step.folder / "outputs" / name
    path = spec.get("path")
    if path is None:
        return Port(step.key, name, kind, default)
    path = _scalar(path, f"{where}.path", "a path")  # a number is a relative folder name, as a shell reads it
    file_name = os.path.basename(path.rstrip("/")) if kind == "uri_file" else None
    if path.startswith("azureml:") or is_url(path):
        if not path.startswith("azureml:"):
            raise SpecError(f"{where}.path: {shown(path)}: output ports in object stores are not supported yet",
                            hint="remove the path: the port's folder is then under the output folder")
        return Port(step.key, name, kind, default, file_name or None, azure_path=path)
    local = Path(_local(path, base))
    if kind == "uri_file":
        return Port(step.key, name, kind, local.parent, local.name, own=False)
    return Port(step.key, name, kind, local, own=False)


def cloud_notes(pipeline: Pipeline) -> list[str]:
    """One note per output port whose Azure path (``azureml://...``) is written to a local folder instead."""
    notes = []
    for step in pipeline.steps.values():
        for port in step.outputs.values():
            if port.azure_path and step.key not in pipeline.skipped:
                where = port.folder / port.file_name if port.file_name else port.folder
                notes.append(f"step {step.key}: output {port.name} ({port.azure_path}) is written to {where}")
    return notes


def _check_references(pipeline: Pipeline) -> None:
    for step in pipeline.steps.values():
        for name, binding in step.inputs.items():
            if binding.source is None:
                continue
            upstream, port = binding.source
            where = f"jobs.{step.key}.inputs.{name}"
            if upstream not in pipeline.steps:
                raise SpecError(f"{where}: ${{{{parent.jobs.{upstream}.outputs.{port}}}}} names no step",
                                hint=f"steps: {', '.join(pipeline.steps)}")
            if port not in pipeline.steps[upstream].outputs:
                raise SpecError(f"{where}: step {upstream!r} has no output {port!r}",
                                hint=f"its outputs: {', '.join(pipeline.steps[upstream].outputs) or 'none'}")


def _consumers(pipeline: Pipeline, count_cli: bool) -> dict[str, int]:
    """How many inputs read each step's outputs (``count_cli``: as the YAML has it, before ``--input``)."""
    counts = dict.fromkeys(pipeline.steps, 0)
    for step in pipeline.steps.values():
        for name, binding in step.inputs.items():
            source = binding.source or (step.cut_sources.get(name) if count_cli else None)
            if source:
                counts[source[0]] += 1
    return counts


def _order(steps: dict[str, Step]) -> list[str]:
    """The steps in dependency order (as written where free to choose); a cycle is one line."""
    done: list[str] = []
    state: dict[str, int] = {}

    def visit(key: str, trail: list[str]) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            cycle = trail[trail.index(key):] + [key]
            raise SpecError(f"jobs: the steps {' -> '.join(cycle)} depend on each other in a cycle",
                            hint="a step cannot read an output of a step that reads its own")
        state[key] = 1
        for up in steps[key].upstream:
            visit(up, trail + [key])
        state[key] = 2
        done.append(key)

    for key in steps:
        visit(key, [])
    return done
