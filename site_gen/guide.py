"""Hand-written pages: Markdown + Jinja sources under ``site_gen/pages/``, rendered with the data.

A source ``site_gen/pages/<name>.md.j2`` becomes the page ``<name>.md`` of the docs tree (list it
in the ``nav`` of ``mkdocs.yml``). Its prose is written by hand; every number in it comes from the
data, gathered here without importing the runner or torch:

- the experiment matrix ``plugins/reproduce.yaml``, read as plain YAML (:func:`read_matrix`);
- the result records under ``results/`` (cells, inputs, seconds, training time, hyper-parameters);
- the embedded checkpoint's model card files (``config.json``, ``training_log.json``);
- the plugin registry's static scan (:func:`plugins.registry.describe`, no plugin imported).

Values are inserted by :func:`md_inert`, which turns every character that Markdown or HTML could
read as markup into a character reference: a value can never start a link, emphasis, a table
cell, a heading or an attribute list, whatever text a record or an error message holds.

>>> md_inert("[x](javascript:alert(1)) <b>*a*</b> {: onclick=1}")
'&#91;x&#93;&#40;javascript:alert&#40;1&#41;&#41; &#60;b&#62;&#42;a&#42;&#60;/b&#62; &#123;: onclick=1&#125;'
>>> MatrixExperiment("e", ("m",), (("b", ("s1", "s2")),), (("vcd", "vcd", {}),), (0,)).cells()
['m/b/s1/vcd/seed0', 'm/b/s2/vcd/seed0']
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from plugins.api import COMMON_PROTOCOL, cell_path, record_name
from plugins.files import StatCache, stat_key

PAGES_DIR = Path(__file__).parent / "pages"
PAGE_SUFFIX = ".md.j2"
MATRIX = Path("plugins/reproduce.yaml")
CHECKPOINTS = Path("plugins/models/checkpoints")
CARD_FILES = ("config.json", "training_log.json")
"""The model card's data files the pages read (README.md is the card's own rendering of the same numbers)."""

_INERT = {c: f"&#{ord(c)};" for c in "&<>\"'\\`*_[](){}#|!~\n\r"}


def md_inert(text: str) -> str:
    """``text`` with every Markdown or HTML markup character written as a character reference."""
    return "".join(_INERT.get(c, c) for c in text)


def page_sources() -> dict[str, str]:
    """Docs page (``experiments.md``) → template name (``experiments.md.j2``) of every hand-written page."""
    return {p.relative_to(PAGES_DIR).as_posix()[: -len(".j2")]: p.relative_to(PAGES_DIR).as_posix()
            for p in sorted(PAGES_DIR.rglob(f"*{PAGE_SUFFIX}"))}


# ---------------------------------------------------------------- the matrix, read as YAML

@dataclass(frozen=True)
class MatrixExperiment:
    """One experiment of ``plugins/reproduce.yaml``: models × benchmarks (× splits) × methods × seeds."""

    name: str
    models: tuple[str, ...]  # record names (lower case, "/" as "--")
    benchmarks: tuple[tuple[str, Optional[tuple[str, ...]]], ...]  # (benchmark, splits, or None for all of them)
    methods: tuple[tuple[str, str, dict], ...]  # (label, plugin, hyper-parameters the matrix sets)
    seeds: tuple[int, ...]
    protocols: tuple[str, ...] = (COMMON_PROTOCOL,)  # decoding protocols (names in the matrix's protocols)

    def cells(self) -> Optional[list[str]]:
        """Its cell names in the runner's order, or None when a benchmark runs all its splits (only the runner knows them)."""
        if any(splits is None for _, splits in self.benchmarks):
            return None
        return [cell_path(model, bench, split, label, protocol, seed) for bench, splits in self.benchmarks
                for split in splits or () for model in self.models for label, _, _ in self.methods
                for protocol in self.protocols for seed in self.seeds]

    def holds(self, record: Any) -> bool:
        """Whether a result record is one of this experiment's cells."""
        splits = dict(self.benchmarks).get(record.benchmark, ())
        return (record.model in self.models and record.benchmark in dict(self.benchmarks)
                and (splits is None or record.split in splits)
                and record.method in {label for label, _, _ in self.methods} and record.seed in self.seeds
                and record.protocol in self.protocols)


def parse_matrix(data: Any) -> list[MatrixExperiment]:
    """The experiments of a parsed matrix; raises ``ValueError`` naming what is not as expected."""
    if not isinstance(data, dict) or not isinstance(data.get("experiments"), list):
        raise ValueError("expected a mapping with a list of 'experiments'")
    out = []
    for i, exp in enumerate(data["experiments"]):
        if not isinstance(exp, dict) or not isinstance(exp.get("name"), str):
            raise ValueError(f"experiments[{i}]: expected a mapping with a name")
        models = tuple(record_name(m["name"] if isinstance(m, dict) else str(m)) for m in exp.get("models") or [])
        benchmarks = []
        for bench, spec in (exp.get("benchmarks") or {}).items():
            splits = spec.get("splits") if isinstance(spec, dict) else spec
            benchmarks.append((str(bench), tuple(str(s) for s in splits) if isinstance(splits, list) else None))
        methods = []
        for label, params in (exp.get("methods") or {}).items():
            params = dict(params or {})
            methods.append((str(label), str(params.pop("use", label)), params))
        seeds = tuple(int(s) for s in exp.get("seeds") or [0])
        protocols = tuple(str(p) for p in exp.get("protocols") or [COMMON_PROTOCOL])
        out.append(MatrixExperiment(exp["name"], models, tuple(benchmarks), tuple(methods), seeds, protocols))
    return out


@dataclass(frozen=True)
class PaperProtocol:
    """A method's paper protocol as the matrix's ``paper_protocols`` names it, with what the protocol sets."""

    label: str  # method label
    protocol: str  # protocol name
    settings: dict  # the protocol's fields as the matrix writes them ({} for the built-in common protocol)
    source: str  # official script or paper section
    note: str = ""

    @property
    def text(self) -> str:
        """The protocol in words: "greedy", "sample, temperature 1.0, top_p 1.0, suffix "..."", ..."""
        s = self.settings
        parts = [str(s.get("decoding", "greedy"))]
        parts += [f"{k} {s[k]}" for k in ("temperature", "top_p", "num_beams", "max_new_tokens") if k in s]
        if s.get("suffix"):
            parts.append(f'suffix "{s["suffix"]}"')
        return ", ".join(parts)


def parse_paper_protocols(data: Any) -> list[PaperProtocol]:
    """The matrix's ``paper_protocols`` with their protocols' settings, by label; raises ``ValueError`` if malformed."""
    if not isinstance(data, dict):
        return []
    protocols = data.get("protocols") or {}
    out = []
    for label, spec in (data.get("paper_protocols") or {}).items():
        if not isinstance(spec, dict) or not isinstance(spec.get("protocol"), str):
            raise ValueError(f"paper_protocols[{label!r}]: expected a mapping with a protocol")
        name = spec["protocol"]
        settings = protocols.get(name) if name != COMMON_PROTOCOL else {}
        out.append(PaperProtocol(str(label), name, dict(settings or {}), str(spec.get("source", "")),
                                 str(spec.get("note", ""))))
    return sorted(out, key=lambda p: p.label)


def read_paper_protocols(root: Path) -> list[PaperProtocol]:
    """:func:`parse_paper_protocols` of ``root/plugins/reproduce.yaml`` (``[]`` when it cannot be read: read_matrix says why)."""
    try:
        return parse_paper_protocols(yaml.safe_load((Path(root) / MATRIX).read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, TypeError, AttributeError):
        return []


def read_matrix(root: Path) -> tuple[list[MatrixExperiment], str]:
    """(experiments, problem) of ``root/plugins/reproduce.yaml``; a missing or unreadable matrix gives ``[]`` and why."""
    path = Path(root) / MATRIX
    if not path.is_file():
        return [], f"{MATRIX.as_posix()} is not in this checkout"
    try:
        return parse_matrix(yaml.safe_load(path.read_text(encoding="utf-8"))), ""
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, TypeError, AttributeError) as exc:
        return [], f"{MATRIX.as_posix()}: cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"


# ---------------------------------------------------------------- costs measured in the records

@dataclass(frozen=True)
class Cost:
    """What a set of cells cost, as their records measured it."""

    label: str
    cells: Optional[int]  # cells the matrix lists (None: a benchmark runs all its splits)
    recorded: int  # of which have a record
    inputs: int  # questions or captions answered (sum of n_samples)
    answer_seconds: float  # sum of seconds_per_input × n_samples: answering only, on one worker
    trainings: int  # distinct one-off trainings the cells used (a method config on a model)
    train_seconds: float  # their training time (provenance.train_seconds), each counted once
    devices: tuple[str, ...] = ()  # "cpu float32", ... as the records state them
    dates: tuple[str, ...] = ()  # (first, last) day a record was written


def _training_key(record: Any) -> str:
    return record.model + "\0" + json.dumps(record.provenance.method_config, sort_keys=True)


def cost_of(label: str, records: list, cells: Optional[int]) -> Cost:
    trainings = {_training_key(r): r.provenance.train_seconds for r in records if r.provenance.train_seconds is not None}
    dates = sorted(r.provenance.date[:10] for r in records)
    return Cost(label, cells, len(records), sum(r.n_samples for r in records),
                sum(r.seconds_per_input * r.n_samples for r in records), len(trainings), sum(trainings.values()),
                tuple(sorted({f"{r.provenance.device} {r.provenance.dtype}" for r in records})),
                (dates[0], dates[-1]) if dates else ())


def experiment_costs(experiments: list[MatrixExperiment], records: Iterable[Any]) -> tuple[list[Cost], Optional[Cost]]:
    """Per experiment, and for the whole matrix (a cell or training shared by experiments counted once)."""
    records = list(records)
    rows, seen = [], {}
    for exp in experiments:
        mine = [r for r in records if exp.holds(r)]
        seen.update((r.cell, r) for r in mine)
        cells = exp.cells()
        rows.append(cost_of(exp.name, mine, len(cells) if cells is not None else None))
    if not experiments:
        return rows, None
    all_cells: set[str] = set()
    for exp in experiments:
        cells = exp.cells()
        if cells is None:
            all_cells = set()
            break
        all_cells.update(cells)
    total = cost_of("whole matrix", [seen[c] for c in sorted(seen)], len(all_cells) or None)
    return rows, total


# ---------------------------------------------------------------- benchmarks and method settings

@dataclass(frozen=True)
class BenchmarkRow:
    name: str
    summary: str  # first line of the plugin's docstring
    splits: tuple[str, ...]  # splits the matrix runs (empty: not in the matrix; None in a spec: all)
    all_splits: bool  # the matrix runs every split of it
    inputs: dict = field(default_factory=dict)  # split → inputs per record (the largest n_samples seen)


def benchmark_rows(described: list[tuple[str, str]], experiments: list[MatrixExperiment], records: Iterable[Any]) -> list[BenchmarkRow]:
    splits: dict[str, list[str]] = {}
    every: set[str] = set()
    for exp in experiments:
        for bench, bench_splits in exp.benchmarks:
            if bench_splits is None:
                every.add(bench)
            for s in bench_splits or ():
                if s not in splits.setdefault(bench, []):
                    splits[bench].append(s)
    inputs: dict[str, dict[str, int]] = {}
    for r in records:
        per = inputs.setdefault(r.benchmark, {})
        per[r.split] = max(per.get(r.split, 0), r.n_samples)
    rows = []
    for name, summary in described:
        order = splits.get(name, [])
        seen = inputs.get(name, {})
        ordered = {s: seen[s] for s in [*order, *sorted(set(seen) - set(order))] if s in seen}
        rows.append(BenchmarkRow(name, summary, tuple(order), name in every, ordered))
    return rows


def method_settings(records: Iterable[Any], labels: Optional[set[str]] = None) -> list[tuple[str, str, dict, int]]:
    """(label, plugin, resolved hyper-parameters, records) for every distinct setting a method label ran with.

    The settings come from the records' provenance (``method_config``): what ran, defaults included.
    """
    groups: dict[tuple[str, str, str], int] = {}
    for r in records:
        if labels is not None and r.method not in labels:
            continue
        config = dict(r.provenance.method_config)
        plugin = str(config.pop("plugin", r.method))
        key = (r.method, plugin, json.dumps(config, sort_keys=True))
        groups[key] = groups.get(key, 0) + 1
    return [(label, plugin, json.loads(config), n) for (label, plugin, config), n in sorted(groups.items())]


# ---------------------------------------------------------------- the checkpoint's model card

def read_checkpoint(root: Path, model: str) -> tuple[Optional[dict], str]:
    """(``{"path", "config", "log"}``, problem) for a committed checkpoint folder ``plugins/models/checkpoints/<model>``."""
    folder = Path(root) / CHECKPOINTS / model
    data: dict[str, Any] = {"path": (CHECKPOINTS / model).as_posix()}
    for name, key in zip(CARD_FILES, ("config", "log")):
        try:
            data[key] = json.loads((folder / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None, f"{(CHECKPOINTS / model / name).as_posix()} is not in this checkout"
        except (OSError, ValueError) as exc:
            return None, f"{(CHECKPOINTS / model / name).as_posix()}: cannot be read ({exc})"
    return data, ""


# ---------------------------------------------------------------- everything the pages read

@dataclass(frozen=True)
class GuideData:
    """The data of the hand-written pages other than the knowledge base and the records (hashable as JSON)."""

    experiments: list[MatrixExperiment]
    matrix_problem: str
    checkpoints: dict[str, Optional[dict]]  # model name → model card data (None: not committed here)
    checkpoint_problems: dict[str, str]
    plugins: dict[str, list[tuple[str, str]]]  # kind → (name, summary) from the registry's static scan
    modules: list[tuple[str, int, str]] = field(default_factory=list)  # (path, lines, docstring's first line), the file map
    paper_protocols: list[PaperProtocol] = field(default_factory=list)  # each method's paper protocol (the matrix's)

    def key(self) -> dict:
        return asdict(self)


MAPPED = ("alignscope", "plugins", "site_gen")
"""The packages whose modules the architecture page's file map lists."""
_MODULE_SUMMARIES = StatCache("module-summaries.json")


def plain_rst(text: str) -> str:
    """A docstring line without reStructuredText markup: roles and literal quotes dropped.

    >>> plain_rst("The ``alignscope`` command over :mod:`plugins.runner` and :func:`~a.b`.")
    'The alignscope command over plugins.runner and b.'
    """
    import re

    text = re.sub(r":[a-z]+:`~[\w.]*?\.?(\w+)`", r"\1", text)
    text = re.sub(r":[a-z]+:`([^`]+)`", r"\1", text)
    return text.replace("``", "").replace("`", "")


def module_map(root: Path) -> list[tuple[str, int, str]]:
    """(path, lines, first line of the module docstring) of every Python module of :data:`MAPPED`, sorted.

    Read from source (nothing is imported); parsed files are remembered by file status
    (:class:`plugins.files.StatCache`), so an unchanged tree costs a ``stat`` per file.
    """
    import ast

    cache = _MODULE_SUMMARIES
    out = []
    for package in MAPPED:
        for path in sorted((Path(root) / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            status = stat_key(path)
            known = cache.get(str(path.resolve()), status)
            if known is None:
                text = path.read_text(encoding="utf-8")
                try:
                    doc = ast.get_docstring(ast.parse(text)) or ""
                except SyntaxError:
                    doc = ""
                known = [text.count("\n"), plain_rst((doc.strip().splitlines() or [""])[0])]
                cache.put(str(path.resolve()), status, known)
            out.append((rel, int(known[0]), str(known[1])))
    cache.save()
    return out


def read_guide_data(root: Path) -> GuideData:
    from plugins.registry import KINDS, describe

    experiments, problem = read_matrix(root)
    models = sorted({m for exp in experiments for m in exp.models})
    cards, card_problems = {}, {}
    for model in models:
        cards[model], why = read_checkpoint(root, model)
        if why:
            card_problems[model] = why
    return GuideData(experiments, problem, cards, card_problems, {kind: describe(kind) for kind in KINDS},
                     module_map(root), read_paper_protocols(root))


# ---------------------------------------------------------------- what the templates get

@dataclass(frozen=True)
class Probe:
    """One yes/no probe of the model card's own evaluation."""

    name: str  # pope, attribute, relation
    split: str  # "" for a probe without splits
    metrics: dict


PROBE_ORDER = ("pope", "attribute", "relation")
SPLIT_ORDER = ("random", "popular", "adversarial")


def card_probes(metrics: dict) -> list[Probe]:
    """The yes/no probes of ``training_log.json``'s ``metrics``: POPE, attribute, relation first, splits as POPE orders them."""
    def rank(name: str, order: tuple[str, ...]) -> tuple[int, str]:
        return (order.index(name) if name in order else len(order), name)

    out = []
    for name in sorted(metrics, key=lambda n: rank(n, PROBE_ORDER)):
        value = metrics[name]
        if isinstance(value, dict) and "accuracy" in value:
            out.append(Probe(name, "", value))
        elif isinstance(value, dict):
            out += [Probe(name, split, value[split]) for split in sorted(value, key=lambda s: rank(s, SPLIT_ORDER))
                    if isinstance(value[split], dict) and "accuracy" in value[split]]
    return out


@dataclass(frozen=True)
class GuideContext:
    """Everything a hand-written page reads, computed once per build (``g`` in the templates)."""

    data: GuideData
    records: list  # every result record
    index: Any  # site_gen.results_index.ResultsIndex
    stale: frozenset
    costs: list[Cost]
    total: Optional[Cost]
    benchmarks: list[BenchmarkRow]
    settings: list[tuple[str, str, dict, int]]  # method hyper-parameters as run (cause-experiment arms left out)
    model: Optional[str]  # the embedded model: the first model of the matrix with a committed model card
    card: Optional[dict]
    probes: list[Probe]
    reported_baselines: list  # {paper, setting, accuracy: {split: %}}: the 7B LLaVA's POPE baseline as papers print it
    labels_by_plugin: dict  # plugin → matrix labels that run it


REFERENCE_MODEL = "llava-1.5-7b"
"""The knowledge-base model whose reported POPE baselines sit beside the embedded model's own scores."""


def guide_context(kb: Any, records: list, index: Any, data: Optional[GuideData], stale: frozenset) -> GuideContext:
    from .causes import cause_arms

    data = data if data is not None else GuideData([], "no matrix was read", {}, {}, {})
    costs, total = experiment_costs(data.experiments, records)
    model = next((m for m, card in data.checkpoints.items() if card is not None), None)
    card = data.checkpoints.get(model) if model else None
    arms = cause_arms(kb)
    labels_by_plugin: dict[str, list[str]] = {}
    for exp in data.experiments:
        for label, plugin, _ in exp.methods:
            if label not in labels_by_plugin.setdefault(plugin, []):
                labels_by_plugin[plugin].append(label)
    reported: dict[tuple[str, str], dict] = {}
    for pid, p in sorted(kb.papers.items()):
        for res in p.reported:
            acc = res.metrics.get("accuracy")
            if res.model == REFERENCE_MODEL and res.benchmark == "pope" and res.method is None and acc is not None and res.unit != "score":
                row = reported.setdefault((pid, res.setting or ""), {"paper": pid, "setting": res.setting or "", "accuracy": {}})
                row["accuracy"][res.split] = acc if res.unit == "percent" else 100 * acc
    return GuideContext(
        data, list(records), index, stale, costs, total,
        benchmark_rows(data.plugins.get("benchmarks", []), data.experiments, records),
        method_settings(records, {r.method for r in records if r.method not in arms}),
        model, card, card_probes(card["log"].get("metrics", {})) if card else [], list(reported.values()), labels_by_plugin)
