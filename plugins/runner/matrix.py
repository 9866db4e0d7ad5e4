"""The experiment matrix: ``reproduce.yaml``'s schema, and its expansion into cells.

``plugins/reproduce.yaml`` lists named experiments; each is a cross product
``models × benchmarks (× splits) × methods × seeds``. Every combination is a **cell**, named
``model/benchmark/split/method/seed<k>`` — also its path under ``results/``::

    experiments:
      - name: default
        models: [alignscope-tiny-llava]
        benchmarks:
          world-pope: [random, popular, adversarial]   # splits (omit for all)
        methods:
          baseline: {}                                 # label: hyper-parameters
          vcd-a0.5: {use: vcd, alpha: 0.5}              # another label for the same plugin
        seeds: [0]

**Seeds.** A cell's seed is passed to the benchmark (per-item random draws). A method with a
``seed`` hyper-parameter of its own (a tuned method's training seed) gets the cell's seed there too
unless the matrix sets it, so ``seeds: [0, 1, 2]`` means three independent training runs.
**Shared cells.** Two experiments may list the same cell (a control arm common to several cause
experiments) when everything about it is equal; it runs once. The same name with other settings
is an error.
**Errors** name ``file:line``. A bad experiment, method, benchmark or split stops only what it
names: :func:`load_matrix` keeps the valid experiments (``Matrix.problems`` lists the others) and
:func:`expand_all` the valid cells; :func:`expand` is the strict form that refuses any problem.

>>> cell = Cell("default", ModelSpec(name="alignscope-tiny-llava"), "world-pope", "random", (), "baseline",
...             "baseline", (), 0)
>>> cell.name
'alignscope-tiny-llava/world-pope/random/baseline/seed0'
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator

from plugins.api import cell_path, record_name
from plugins.config import StrictConfig, unknown
from plugins.models.decoding import COMMON, COMMON_NAME, Protocol

__all__ = ["RunnerError", "Defaults", "ModelSpec", "BenchmarkSpec", "Experiment", "ComparisonSpec", "Matrix", "load_matrix", "Cell",
           "freeze", "thaw", "expand", "expand_all", "DEFAULT_MATRIX"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MATRIX = REPO_ROOT / "plugins" / "reproduce.yaml"


class RunnerError(ValueError):
    """A matrix that cannot run: bad YAML, an unknown plugin, a duplicate cell, a missing checkpoint."""


# ---------------------------------------------------------------- the matrix file

class Defaults(StrictConfig):
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    dtype: str = "auto"  # auto (float32 on CPU), float32, float16, bfloat16
    batch_size: int = Field(default=64, ge=1)  # items per generate() call


class ModelSpec(StrictConfig):
    name: str  # registered model, or any label when ``path`` is given
    path: Optional[str] = None  # local checkpoint directory or HF cache id (default: the model's own)


class BenchmarkSpec(StrictConfig):
    splits: Optional[list[str]] = None  # default: every split of the benchmark
    options: dict[str, Any] = Field(default_factory=dict)  # the benchmark's own options (data folders, limit)


class Experiment(StrictConfig):
    name: str
    models: list[Union[str, ModelSpec]]
    benchmarks: dict[str, Union[None, list[str], BenchmarkSpec]]
    methods: dict[str, Optional[dict[str, Any]]]  # label -> hyper-parameters (``use:`` names another plugin)
    seeds: list[int] = Field(default_factory=lambda: [0])
    protocols: list[str] = Field(default_factory=lambda: [COMMON_NAME], min_length=1)  # names from the matrix's protocols
    reference: Optional[str] = None  # a method label of the matrix: each method here is compared with it (plugins.compare)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds or any(s < 0 for s in seeds):
            raise ValueError(f"seeds are {seeds}, expected a non-empty list of non-negative integers")
        return seeds


class ComparisonSpec(StrictConfig):
    """A method-specific reference: ``method`` is also compared with ``reference``, for the reason ``why``.

    Both run under the same protocol unless ``protocol`` and ``reference_protocol`` say otherwise
    (VCD sampling against the greedy baseline, say).
    """

    method: str  # method label
    reference: str  # method label it is set against
    why: str = Field(min_length=3)  # shown beside the comparison: why this reference is the right one
    protocol: Optional[str] = None  # only the method's runs under this protocol (default: every protocol)
    reference_protocol: Optional[str] = None  # the reference's protocol (default: the method's)


class PaperProtocol(StrictConfig):
    """The protocol a method's own paper evaluates it under, and where that was read."""

    protocol: str  # a protocol name of the matrix ("common" when the paper decodes greedily with no suffix)
    source: str = Field(min_length=3)  # the official script or the paper's section it comes from
    note: str = ""  # what differs from the paper and why (shown beside it)


class Matrix(StrictConfig):
    version: int = 1
    defaults: Defaults = Field(default_factory=Defaults)
    experiments: list[Experiment] = Field(min_length=1)
    protocols: dict[str, Protocol] = Field(default_factory=dict, validate_default=True)  # name -> decoding, suffix, budget ("common" is built in)
    comparisons: list[ComparisonSpec] = Field(default_factory=list)  # method-specific references (plugins.compare)
    paper_protocols: dict[str, PaperProtocol] = Field(default_factory=dict)  # method label -> its paper's protocol

    @field_validator("protocols")
    @classmethod
    def _protocols(cls, protocols: dict[str, Protocol]) -> dict[str, Protocol]:
        for name, protocol in protocols.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9.+_-]*", name):
                raise ValueError(f"protocol name {name!r}: lower-case letters, digits and . + _ - only")
            if name == COMMON_NAME and protocol != COMMON:
                raise ValueError(f"protocol {COMMON_NAME!r} is built in (greedy, no suffix, the benchmark's budget); "
                                 "give yours another name")
        return {COMMON_NAME: COMMON, **protocols}
    _path: Optional[Path] = PrivateAttr(default=None)  # the file it was read from, for file:line messages
    _node: Any = PrivateAttr(default=None)  # its YAML node tree
    _indices: list[int] = PrivateAttr(default_factory=list)  # each experiment's position in the file
    _problems: list[str] = PrivateAttr(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """``file:line: ...`` of every experiment left out because it is invalid."""
        return list(self._problems)

    def where(self, loc: Sequence[Any]) -> str:
        """``file:line: `` of the value at ``loc`` (``experiments``, index, key, ...), or nothing without a file."""
        if self._path is None:
            return ""
        return f"{self._path}:{_line_of(self._node, loc)}: "

    def experiment_loc(self, position: int) -> list[Any]:
        """The YAML location of ``experiments[position]`` (its index in the file, invalid ones counted)."""
        return ["experiments", self._indices[position] if position < len(self._indices) else position]


def load_matrix(path: Union[str, Path] = DEFAULT_MATRIX) -> Matrix:
    """Read and validate a matrix file; every problem is reported as ``file:line: key: message``.

    An invalid experiment is left out and named in ``Matrix.problems``; anything else wrong (the
    YAML, the defaults, no valid experiment at all) raises :class:`RunnerError` with every line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        path = _shown(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise RunnerError(f"{path}: cannot read the matrix ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise RunnerError(f"{path}:{mark.line + 1 if mark else 1}: YAML syntax error: {exc.problem}") from None
    except (yaml.YAMLError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise RunnerError(f"{path}:1: cannot read the matrix: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict):
        raise RunnerError(f"{path}:1: expected a mapping with 'experiments' at the top level")
    problems, kept, indices = [], [], []
    experiments = data.get("experiments")
    if isinstance(experiments, list):
        for i, raw in enumerate(experiments):
            try:
                kept.append(Experiment.model_validate(raw))  # validated once: Matrix takes the instances as they are
            except ValidationError as exc:
                problems += _located(exc, path, node, ["experiments", i])
                continue
            indices.append(i)
        if experiments and not kept:
            raise RunnerError("\n".join(problems))
        data = {**data, "experiments": kept}
    try:
        matrix = Matrix.model_validate(data)
    except ValidationError as exc:
        raise RunnerError("\n".join(dict.fromkeys(problems + _located(exc, path, node, [])))) from None
    matrix._path, matrix._node, matrix._indices, matrix._problems = path, node, indices, problems
    return matrix


def _shown(path: Path) -> Path:
    """``path`` as messages show it: relative to the working directory when it lies below it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        return path


def _located(exc: ValidationError, path: Path, node: Any, prefix: list[Any]) -> list[str]:
    """``file:line: key: message`` for each error of ``exc``, raised for the value at ``prefix``."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = prefix + [p for p in err["loc"] if not (isinstance(p, str) and (
            "[" in p or p in ("str", "ModelSpec", "BenchmarkSpec", "list[str]", "none", "dict[str,any]")))]
        key = ".".join(str(p) for p in loc)
        msg = err["msg"].removeprefix("Value error, ")
        named = re.search(r"unknown keys? '([^']+)'", msg)  # StrictConfig reports unknown keys on their parent
        where = _line_of(node, loc + [named.group(1)] if named else loc)
        lines.append(f"{path}:{where}: {key}: {msg}")
    return list(dict.fromkeys(lines))


def _line_of(node: Any, loc: Sequence[Any]) -> int:
    """1-based line of the YAML value at ``loc`` (nearest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == str(part)]
            if not match:
                break
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


# ---------------------------------------------------------------- cells

@dataclass(frozen=True)
class Cell:
    """One run: a model on one benchmark split, with one method (label + plugin + config), one seed."""

    experiment: str
    model: ModelSpec
    benchmark: str
    split: str
    benchmark_options: tuple[tuple[str, Any], ...]  # frozen dict items
    method: str  # the label: the record's method name
    plugin: str  # the registered method it runs
    config: tuple[tuple[str, Any], ...]  # frozen hyper-parameters
    seed: int
    protocol: str = COMMON_NAME  # the protocol's name in the matrix
    protocol_settings: Protocol = COMMON  # what it says

    @property
    def name(self) -> str:
        return cell_path(record_name(self.model.name), self.benchmark, self.split, self.method, self.protocol, self.seed)


def freeze(d: Optional[dict[str, Any]]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in (d or {}).items()))


def thaw(items: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in items}


def expand(matrix: Matrix, only: Optional[str] = None) -> list[Cell]:
    """Every cell of the matrix (in file order), optionally only those whose name matches the glob ``only``.

    Strict: any problem of the matrix (see :func:`expand_all`) raises :class:`RunnerError` with all of them.
    """
    cells, problems = expand_all(matrix)
    if problems:
        raise RunnerError("\n".join(problems))
    if only:
        cells = [c for c in cells if fnmatch.fnmatchcase(c.name, only) or fnmatch.fnmatchcase(c.name, f"*{only}*")]
    return cells


def expand_all(matrix: Matrix) -> tuple[list[Cell], list[str]]:
    """``(cells, problems)``: every cell the matrix can run, and ``file:line: ...`` for what it cannot.

    Problems are the experiments :func:`load_matrix` left out, unknown methods, benchmarks and
    splits (with suggestions), and one cell name given two different settings; each stops only
    the cells it names.
    """
    from plugins.registry import RegistryError, get_benchmark, list_benchmarks, list_methods

    cells: list[Cell] = []
    problems: list[str] = list(matrix.problems)
    seen: dict[str, Cell] = {}
    methods_known = list_methods()
    for position, exp in enumerate(matrix.experiments):
        at = matrix.experiment_loc(position)
        labels = {}
        for label, params in exp.methods.items():
            plugin = (params or {}).get("use", label)
            if plugin in methods_known:
                labels[label] = params
                continue
            loc = at + ["methods", label] + (["use"] if "use" in (params or {}) else [])
            problems.append(f"{matrix.where(loc)}experiment {exp.name!r}: method {label!r}: "
                            f"{unknown('method', plugin, methods_known)}")
        protocols = []
        for j, name in enumerate(exp.protocols):
            if name in matrix.protocols:
                protocols.append(name)
            else:
                problems.append(f"{matrix.where(at + ['protocols', j])}experiment {exp.name!r}: "
                                f"{unknown('protocol', name, matrix.protocols)} (define it under protocols:)")
        for bench, spec in exp.benchmarks.items():
            if bench not in list_benchmarks():
                problems.append(f"{matrix.where(at + ['benchmarks', bench])}experiment {exp.name!r}: "
                                f"{unknown('benchmark', bench, list_benchmarks())}")
                continue
            spec = spec if isinstance(spec, BenchmarkSpec) else BenchmarkSpec(splits=spec)
            try:
                splits_all = get_benchmark(bench).splits
            except RegistryError as exc:
                problems.append(f"{matrix.where(at + ['benchmarks', bench])}{exc}")
                continue
            listed = isinstance(exp.benchmarks[bench], BenchmarkSpec)
            bench_protocols = protocols
            if getattr(get_benchmark(bench), "common_protocol_only", False) and protocols != [COMMON_NAME]:
                bench_protocols = [p for p in protocols if p == COMMON_NAME]
                others = [p for p in protocols if p != COMMON_NAME]
                problems.append(f"{matrix.where(at + ['benchmarks', bench])}experiment {exp.name!r}: benchmark {bench!r} "
                                f"reads the model's internals, not decoded answers; it runs under the common protocol "
                                f"only, not {', '.join(others)}")
            for j, split in enumerate(spec.splits or splits_all):
                if split not in splits_all:
                    loc = at + ["benchmarks", bench] + (["splits"] if listed else []) + [j]
                    problems.append(f"{matrix.where(loc)}experiment {exp.name!r}: benchmark {bench!r}: "
                                    f"{unknown('split', split, splits_all)}")
                    continue
                for model in exp.models:
                    model = model if isinstance(model, ModelSpec) else ModelSpec(name=model)
                    for label, params in labels.items():
                        params = dict(params or {})
                        plugin = params.pop("use", label)
                        for protocol, seed in ((p, s) for p in bench_protocols for s in exp.seeds):
                            cell_params = params
                            if "seed" not in params and _has_seed(plugin):
                                cell_params = {**params, "seed": seed}  # a training run per matrix seed
                            cell = Cell(exp.name, model, bench, split, freeze(spec.options), label, plugin,
                                        freeze(cell_params), seed, protocol, matrix.protocols[protocol])
                            if cell.name in seen:
                                if dataclasses.replace(seen[cell.name], experiment=exp.name) == cell:
                                    continue  # the same cell shared by two experiments (a common control) runs once
                                problems.append(f"{matrix.where(at + ['methods', label])}cell {cell.name} appears in "
                                                f"experiments {seen[cell.name].experiment!r} and {exp.name!r} with "
                                                "different settings, expected each cell once (give one method another "
                                                "label); the second is left out")
                                continue
                            seen[cell.name] = cell
                            cells.append(cell)
    labels_known = sorted({label for exp in matrix.experiments for label in exp.methods})
    for position, exp in enumerate(matrix.experiments):
        if exp.reference is not None and exp.reference not in labels_known:
            problems.append(f"{matrix.where(matrix.experiment_loc(position) + ['reference'])}experiment {exp.name!r}: "
                            f"reference: {unknown('method label', exp.reference, labels_known)}")
    for i, spec in enumerate(matrix.comparisons):
        for field in ("method", "reference"):
            label = getattr(spec, field)
            if label not in labels_known:
                problems.append(f"{matrix.where(['comparisons', i, field])}comparison {i}: "
                                f"{unknown('method label', label, labels_known)}")
        for field in ("protocol", "reference_protocol"):
            name = getattr(spec, field)
            if name is not None and name not in matrix.protocols:
                problems.append(f"{matrix.where(['comparisons', i, field])}comparison {i}: "
                                f"{unknown('protocol', name, matrix.protocols)}")
    runs = {(cell.method, cell.protocol) for cell in cells}
    for label, paper in matrix.paper_protocols.items():
        where = matrix.where(["paper_protocols", label])
        if label not in labels_known:
            problems.append(f"{where}paper_protocols: {unknown('method label', label, labels_known)}")
        elif paper.protocol not in matrix.protocols:
            problems.append(f"{where}paper_protocols[{label!r}]: {unknown('protocol', paper.protocol, matrix.protocols)}")
        elif (label, paper.protocol) not in runs:
            problems.append(f"{where}paper_protocols[{label!r}]: no experiment runs {label!r} under {paper.protocol!r}; "
                            "add it to an experiment with that protocol")
    return cells, list(dict.fromkeys(problems))


def _has_seed(plugin: str) -> bool:
    """Does the method have a ``seed`` hyper-parameter (a training seed)?"""
    from plugins.registry import get_method

    return "seed" in get_method(plugin).Config.model_fields
