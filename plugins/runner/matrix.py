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
from pydantic import Field, ValidationError, field_validator

from plugins.api import record_name
from plugins.config import StrictConfig, unknown

__all__ = ["RunnerError", "Defaults", "ModelSpec", "BenchmarkSpec", "Experiment", "Matrix", "load_matrix", "Cell",
           "freeze", "thaw", "expand", "DEFAULT_MATRIX"]

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

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds or any(s < 0 for s in seeds):
            raise ValueError(f"seeds are {seeds}, expected a non-empty list of non-negative integers")
        return seeds


class Matrix(StrictConfig):
    version: int = 1
    defaults: Defaults = Field(default_factory=Defaults)
    experiments: list[Experiment] = Field(min_length=1)


def load_matrix(path: Union[str, Path] = DEFAULT_MATRIX) -> Matrix:
    """Read and validate a matrix file; every problem is reported as ``file:line: key: message``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RunnerError(f"{path}: cannot read the matrix ({exc.strerror or exc})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise RunnerError(f"{path}:{mark.line + 1 if mark else 1}: YAML syntax error: {exc.problem}") from None
    if not isinstance(data, dict):
        raise RunnerError(f"{path}:1: expected a mapping with 'experiments' at the top level")
    try:
        return Matrix.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            loc = [p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in ("str", "ModelSpec", "BenchmarkSpec", "list[str]", "none", "dict[str,any]")))]
            key = ".".join(str(p) for p in loc)
            msg = err["msg"].removeprefix("Value error, ")
            named = re.search(r"unknown keys? '([^']+)'", msg)  # StrictConfig reports unknown keys on their parent
            where = _line_of(node, loc + [named.group(1)] if named else loc)
            lines.append(f"{path}:{where}: {key}: {msg}")
        raise RunnerError("\n".join(dict.fromkeys(lines))) from None


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

    @property
    def name(self) -> str:
        return f"{record_name(self.model.name)}/{self.benchmark}/{self.split}/{self.method}/seed{self.seed}"


def freeze(d: Optional[dict[str, Any]]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in (d or {}).items()))


def thaw(items: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in items}


def expand(matrix: Matrix, only: Optional[str] = None) -> list[Cell]:
    """Every cell of the matrix (in file order), optionally only those whose name matches the glob ``only``.

    Unknown methods, benchmarks and splits are reported together, with suggestions.
    """
    from plugins.registry import RegistryError, get_benchmark, list_benchmarks, list_methods

    cells: list[Cell] = []
    problems: list[str] = []
    seen: dict[str, Cell] = {}
    for exp in matrix.experiments:
        for label, params in exp.methods.items():
            plugin = (params or {}).get("use", label)
            if plugin not in list_methods():
                problems.append(f"experiment {exp.name!r}: method {label!r}: {unknown('method', plugin, list_methods())}")
        for bench, spec in exp.benchmarks.items():
            if bench not in list_benchmarks():
                problems.append(f"experiment {exp.name!r}: {unknown('benchmark', bench, list_benchmarks())}")
                continue
            spec = spec if isinstance(spec, BenchmarkSpec) else BenchmarkSpec(splits=spec)
            try:
                splits_all = get_benchmark(bench).splits
            except RegistryError as exc:
                problems.append(str(exc))
                continue
            for split in spec.splits or splits_all:
                if split not in splits_all:
                    problems.append(f"experiment {exp.name!r}: benchmark {bench!r}: {unknown('split', split, splits_all)}")
                    continue
                for model in exp.models:
                    model = model if isinstance(model, ModelSpec) else ModelSpec(name=model)
                    for label, params in exp.methods.items():
                        params = dict(params or {})
                        plugin = params.pop("use", label)
                        for seed in exp.seeds:
                            cell_params = params
                            if "seed" not in params and plugin in list_methods() and _has_seed(plugin):
                                cell_params = {**params, "seed": seed}  # a training run per matrix seed
                            cell = Cell(exp.name, model, bench, split, freeze(spec.options), label, plugin,
                                        freeze(cell_params), seed)
                            if cell.name in seen:
                                if dataclasses.replace(seen[cell.name], experiment=exp.name) == cell:
                                    continue  # the same cell shared by two experiments (a common control) runs once
                                problems.append(f"cell {cell.name} appears in experiments {seen[cell.name].experiment!r} "
                                                f"and {exp.name!r} with different settings, expected each cell once "
                                                "(give one method another label)")
                                continue
                            seen[cell.name] = cell
                            cells.append(cell)
    if problems:
        raise RunnerError("\n".join(dict.fromkeys(problems)))
    if only:
        cells = [c for c in cells if fnmatch.fnmatchcase(c.name, only) or fnmatch.fnmatchcase(c.name, f"*{only}*")]
    return cells


def _has_seed(plugin: str) -> bool:
    """Does the method have a ``seed`` hyper-parameter (a training seed)?"""
    from plugins.registry import get_method

    return "seed" in get_method(plugin).Config.model_fields
