"""Load and validate the knowledge base, collecting every error with its file and line.

Records are untrusted input (they arrive by pull request), so parsing is defensive:
safe YAML only (no ``!!python/...`` or any other non-core tag, never executed), a
size limit checked before the file is read, no aliases (an alias bomb cannot
expand), duplicate keys rejected, one document per file, regular files only.

Every problem becomes an :class:`Issue` ``path:line key.path: message``; loading never
stops at the first one and never raises for bad input.

>>> kb, issues = load_knowledge_base(Path("."))   # doctest: +SKIP
>>> print("\\n".join(i.format() for i in issues))  # doctest: +SKIP
"""
from __future__ import annotations

import difflib
import os
import typing
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml
from pydantic import BaseModel, ValidationError

from .schema import CAUSE_ROOT, Benchmark, Method, Model, Paper, TaxonomyNode, normalise_title

MAX_RECORD_BYTES = 512 * 1024
"""Largest record file accepted; a paper record is a few kB, the survey's own about 15 kB."""
MAX_DEPTH = 64
"""Deepest nesting accepted in a record; real records stay below 10."""
RECORD_DIRS = ("taxonomy", "papers")
YAML_SUFFIXES = (".yaml", ".yml")

_CORE_TAGS = frozenset(
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq")
)


def printable(text: str) -> str:
    r"""``text`` with every non-printable character written as its Python escape, so that it
    cannot split a line or drive the terminal; letters of any script stay as they are.

    >>> printable("é\n\x1b[2J\u202e")
    'é\\n\\x1b[2J\\u202e'
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True, order=True)
class Issue:
    """One problem in one file, located to a line and a key path; always printed on one line."""

    path: str
    line: int
    key: str
    message: str

    def format(self) -> str:
        where = f"{printable(self.path)}:{self.line}"
        message = printable(self.message)
        return f"{where} {printable(self.key)}: {message}" if self.key else f"{where}: {message}"

    def github(self) -> str:
        # GitHub workflow command: '%', CR and LF must be escaped in the message, and also ':' and ','
        # in a property such as the file name.
        text = printable(f"{self.key}: {self.message}" if self.key else self.message)
        text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        path = printable(self.path).replace("%", "%25").replace(":", "%3A").replace(",", "%2C")
        return f"::error file={path},line={self.line}::{text}"


class _Located(Exception):
    def __init__(self, mark, message: str):
        super().__init__(message)
        self.line = (mark.line + 1) if mark is not None else 1
        self.message = message


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, so an alias bomb stops at the first ``*ref``, and that
    locates the errors PyYAML raises as plain Python exceptions (``"\\U00110000"``, ``!!int x``)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Located(event.start_mark, f"alias *{event.anchor} is not allowed: write the value out in full")
        return super().compose_node(parent, index)

    def scan_flow_scalar(self, style):
        try:
            return super().scan_flow_scalar(style)
        except ValueError:  # chr() of an escape past U+10FFFF; the reader stands on that escape
            raise _Located(self.get_mark(), "escape sequence beyond \\U0010FFFF is not a Unicode character") from None

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, KeyError, IndexError, OverflowError, TypeError):
            value = node.value
            shown = repr(value if len(value) <= 40 else value[:40] + "…") if isinstance(value, str) else "this value"
            raise _Located(node.start_mark, f"cannot read {shown} as !!{node.tag.rsplit(':', 1)[-1]}") from None


def _reader_issue(rel: str, text: str, exc: yaml.reader.ReaderError) -> Issue:
    """The character PyYAML's reader refuses, by code point and line."""
    kind = "control character" if unicodedata.category(chr(exc.character)) == "Cc" else "not a character"
    line = text.count("\n", 0, exc.position) + 1
    return Issue(rel, line, "", f"U+{exc.character:04X} is not allowed in a record ({kind})")


# ---------------------------------------------------------------- YAML → (data, node)


@dataclass
class SourceFile:
    """A parsed record file: its path (relative to the root), its node tree and its data."""

    path: str
    node: yaml.MappingNode
    data: dict

    def line_of(self, loc: Iterable[Any]) -> int:
        """1-based line of the value at ``loc`` (key names and list indices); nearest parent if absent."""
        return _walk(self.node, loc)[0]


def _walk(node, loc: Iterable[Any]) -> tuple[int, Any]:
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    # A block list or mapping starts on the line after its key: point at the key.
                    starts_later = value_node.start_mark.line > key_node.start_mark.line
                    anchor = key_node if starts_later and not isinstance(value_node, yaml.ScalarNode) else value_node
                    line = anchor.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line, node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            continue  # pydantic-internal loc parts (e.g. union tags) have no YAML counterpart
    return line, node


def _check_tree(root, rel: str) -> list[Issue]:
    """Non-core tags, duplicate keys and excessive depth, found without recursion."""
    issues = []
    stack = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        line = node.start_mark.line + 1
        if depth > MAX_DEPTH:
            issues.append(Issue(rel, line, "", f"nesting deeper than {MAX_DEPTH} levels"))
            continue
        if node.tag not in _CORE_TAGS:
            issues.append(Issue(rel, line, "", f"tag {node.tag!r} is not allowed: records are plain YAML (strings, numbers, lists, mappings)"))
            continue
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    issues.append(Issue(rel, key_node.start_mark.line + 1, "", "a key must be a plain string"))
                    continue
                k = key_node.value
                if k in seen:
                    issues.append(Issue(rel, key_node.start_mark.line + 1, k, f"duplicate key (first defined at line {seen[k]})"))
                else:
                    seen[k] = key_node.start_mark.line + 1
                stack.append((key_node, depth + 1))
                stack.append((value_node, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
    return sorted(issues)


def parse_record_file(path: Path, rel: str, expected: str) -> tuple[Optional[SourceFile], list[Issue]]:
    """Parse one file safely; ``expected`` names the keys a record needs, for the empty-file message."""
    if path.is_symlink() or not path.is_file():
        return None, [Issue(rel, 1, "", "not a regular file (symbolic links are not accepted)")]
    size = path.stat().st_size
    if size > MAX_RECORD_BYTES:
        return None, [Issue(rel, 1, "", f"file is {size:,} bytes; a record may be at most {MAX_RECORD_BYTES:,} bytes")]
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, [Issue(rel, line, "", "file is not valid UTF-8")]
    loader = None
    try:
        loader = _StrictLoader(text)  # the reader checks every character here
        node = loader.get_single_node()
        if node is None:
            return None, [Issue(rel, 1, "", f"empty file: expected a mapping with {expected}")]
        if not isinstance(node, yaml.MappingNode):
            kind = {yaml.SequenceNode: "a list", yaml.ScalarNode: "a single value"}.get(type(node), "something else")
            return None, [Issue(rel, node.start_mark.line + 1, "", f"expected a mapping with {expected} at the top level, found {kind}")]
        issues = _check_tree(node, rel)
        if issues:
            return None, issues
        data = loader.construct_document(node)
    except _Located as exc:
        return None, [Issue(rel, exc.line, "", exc.message)]
    except yaml.reader.ReaderError as exc:
        return None, [_reader_issue(rel, text, exc)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        return None, [Issue(rel, line, "", f"YAML syntax error: {what}")]
    except yaml.YAMLError as exc:
        return None, [Issue(rel, 1, "", f"YAML error: {exc}")]
    except RecursionError:
        return None, [Issue(rel, 1, "", f"nesting deeper than {MAX_DEPTH} levels")]
    except Exception as exc:  # a PyYAML failure not foreseen above: still an issue, never a traceback
        return None, [Issue(rel, 1, "", f"cannot parse record: {type(exc).__name__}")]
    finally:
        if loader is not None:
            loader.dispose()
    return SourceFile(rel, node, data), []


# ---------------------------------------------------------------- pydantic errors → Issues


def _model_at(cls: type[BaseModel], loc: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model class that owns the last key of ``loc`` (for "did you mean")."""
    current: Any = cls
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        if isinstance(part, int):
            continue
        field_info = current.model_fields.get(part)
        if field_info is None:
            return current
        current = _unwrap(field_info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation):
    """Reach the model class inside list[...] / Optional[...] / Annotated[...]."""
    for _ in range(6):
        args = typing.get_args(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if models:
            return models[0]
        if not args:
            return annotation
        annotation = args[0]
    return annotation


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), sorted(set(choices)), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def _key_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and not (part.startswith("function-") or "[" in part):  # pydantic-internal parts
            out += ("." if out else "") + part
    return out


def validation_issues(err: ValidationError, src: SourceFile, cls: type[BaseModel]) -> list[Issue]:
    issues = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        kind = e["type"]
        if kind == "extra_forbidden":
            owner = _model_at(cls, loc[:-1])
            allowed = list(owner.model_fields) if owner else []
            msg = f"unknown key {loc[-1]!r}{did_you_mean(loc[-1], allowed)}"
            if allowed and not did_you_mean(loc[-1], allowed):
                msg += f" (allowed: {', '.join(allowed)})"
        elif kind == "missing":
            msg = f"missing required key {loc[-1]!r}"
        else:
            msg = e["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            value = e.get("input")
            if kind in ("string_pattern_mismatch", "literal_error", "enum") and isinstance(value, (str, int, float)):
                msg = f"{value!r}: {msg}"
        issues.append(Issue(src.path, src.line_of(loc), _key_path(loc), msg))
    return issues


# ---------------------------------------------------------------- the knowledge base


@dataclass
class KnowledgeBase:
    """Validated records, indexed by ID. ``where`` maps ``kind:id`` to ``path:line`` of the definition."""

    root: Path
    taxonomy: dict[str, TaxonomyNode] = field(default_factory=dict)  # full id → node
    parent: dict[str, Optional[str]] = field(default_factory=dict)
    papers: dict[str, Paper] = field(default_factory=dict)
    methods: dict[str, Method] = field(default_factory=dict)
    benchmarks: dict[str, Benchmark] = field(default_factory=dict)
    models: dict[str, Model] = field(default_factory=dict)
    introduced_by: dict[str, str] = field(default_factory=dict)  # "method:vcd" → paper id
    where: dict[str, tuple[str, int]] = field(default_factory=dict)
    files: dict[str, SourceFile] = field(default_factory=dict)  # record key → source
    paper_sources: list[SourceFile] = field(default_factory=list)  # every parsed paper file, valid or not
    invalid: dict[str, set[str]] = field(default_factory=dict)  # kind → ids declared in files that failed validation

    def nodes_of_kind(self, *kinds: str) -> dict[str, TaxonomyNode]:
        return {k: n for k, n in self.taxonomy.items() if n.kind in kinds}

    def counts(self) -> dict[str, int]:
        return {
            "taxonomy nodes": len(self.taxonomy),
            "papers": len(self.papers),
            "methods": len(self.methods),
            "benchmarks": len(self.benchmarks),
            "models": len(self.models),
            "reported results": sum(len(p.reported) for p in self.papers.values()),
        }


def _record_files(root: Path, sub: str) -> list[Path]:
    base = root / sub
    if not base.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in filenames if f.endswith(YAML_SUFFIXES) and not f.startswith(".")]
    return sorted(found)


def load_knowledge_base(root: Path) -> tuple[KnowledgeBase, list[Issue]]:
    """Load ``root/taxonomy`` and ``root/papers``; return the base and every issue found."""
    root = Path(root)
    kb = KnowledgeBase(root=root)
    issues: list[Issue] = []
    if not any((root / d).is_dir() for d in RECORD_DIRS):
        return kb, [Issue(str(root), 1, "", f"no {' or '.join(d + '/' for d in RECORD_DIRS)} folder here: is this an AlignScope checkout?")]

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    for path in _record_files(root, "taxonomy"):
        src, node = _validated(path, rel(path), TaxonomyNode, "keys id, name, kind, summary", issues)
        if node is not None:
            _index_taxonomy(kb, node, src, issues)

    for path in _record_files(root, "papers"):
        src, paper = _validated(path, rel(path), Paper, "keys id, title, authors, summary", issues)
        if src is None:
            continue
        kb.paper_sources.append(src)
        declared = _declare_ids(kb, src, issues)
        if paper is not None:
            _index_paper(kb, paper, src, path.stem, issues, declared)
        else:  # known, though invalid: other files get no "unknown ..." error for these
            for key in declared:
                kind, ident = key.split(":", 1)
                kb.invalid.setdefault(kind, set()).add(ident)

    issues += _check_references(kb)
    return kb, sorted(set(issues))


def _validated(path: Path, rel: str, cls: type[BaseModel], expected: str, issues: list[Issue]):
    """Parse and validate one file: ``(source or None, record or None)``; problems go to ``issues``."""
    src, errs = parse_record_file(path, rel, expected)
    issues += errs
    if src is None:
        return None, None
    try:
        return src, cls.model_validate(src.data)
    except ValidationError as exc:
        issues += validation_issues(exc, src, cls)
        return src, None


def _define(kb: KnowledgeBase, kind: str, ident: str, src: SourceFile, loc: tuple, issues: list[Issue]) -> bool:
    """Register ``kind:ident`` as defined at ``src``/``loc``; an ID defined twice is an error naming both places."""
    key = f"{kind}:{ident}"
    line = src.line_of(loc)
    if key in kb.where:
        other_path, other_line = kb.where[key]
        issues.append(Issue(src.path, line, _key_path(loc), f"{kind} id {ident!r} is already defined in {other_path}:{other_line}"))
        return False
    kb.where[key] = (src.path, line)
    kb.files[key] = src
    return True


def _index_taxonomy(kb: KnowledgeBase, root: TaxonomyNode, src: SourceFile, issues: list[Issue]) -> None:
    stack: list[tuple[TaxonomyNode, Optional[str], tuple]] = [(root, None, ())]
    while stack:
        node, parent, loc = stack.pop()
        full = f"{parent}/{node.id}" if parent else node.id
        if _define(kb, "taxonomy", full, src, loc + ("id",), issues):
            kb.taxonomy[full] = node
            kb.parent[full] = parent
        for i, child in reversed(list(enumerate(node.children))):
            stack.append((child, full, loc + ("children", i)))


def _index_paper(kb: KnowledgeBase, paper: Paper, src: SourceFile, stem: str, issues: list[Issue], declared: set[str]) -> None:
    """Store a valid paper and what it introduces, for the IDs this file defined first."""
    if paper.id != stem:
        issues.append(Issue(src.path, src.line_of(("id",)), "id", f"id {paper.id!r} must equal the file name {stem!r}: rename the file to {paper.id}.yaml or change the id"))
    if f"paper:{paper.id}" not in declared:
        return
    kb.papers[paper.id] = paper
    intro = paper.introduces
    for kind, items, store in (
        ("method", intro.methods, kb.methods),
        ("benchmark", intro.benchmarks, kb.benchmarks),
        ("model", intro.models, kb.models),
    ):
        for item in items:
            if f"{kind}:{item.id}" in declared:
                store[item.id] = item
                kb.introduced_by[f"{kind}:{item.id}"] = paper.id


def _text(value) -> Optional[str]:
    return value.strip() if isinstance(value, str) else None


def _texts(value) -> list[tuple[int, str]]:
    """``(index, text)`` for the string items of a list; anything else yields nothing (already reported)."""
    return [(i, v.strip()) for i, v in enumerate(value) if isinstance(v, str)] if isinstance(value, list) else []


def _dicts(value) -> list[tuple[int, dict]]:
    return [(i, v) for i, v in enumerate(value) if isinstance(v, dict)] if isinstance(value, list) else []


def _declare_ids(kb: KnowledgeBase, src: SourceFile, issues: list[Issue]) -> set[str]:
    """Register the IDs a paper file declares — its own and those it introduces — from the raw
    data, so a file that fails the schema still has its duplicates caught. Returns the
    ``kind:id`` keys this file defined first (none beyond the paper if the paper id is taken)."""
    ident = _text(src.data.get("id"))
    if not ident or not _define(kb, "paper", ident, src, ("id",), issues):
        return set()
    declared = {f"paper:{ident}"}
    intro = src.data.get("introduces") if isinstance(src.data.get("introduces"), dict) else {}
    for kind in ("method", "benchmark", "model"):
        for i, item in _dicts(intro.get(kind + "s")):
            sub = _text(item.get("id"))
            if sub and _define(kb, kind, sub, src, ("introduces", kind + "s", i, "id"), issues):
                declared.add(f"{kind}:{sub}")
    return declared


def _check_references(kb: KnowledgeBase) -> list[Issue]:
    """Every cross-reference must resolve; duplicates of the same paper are errors naming both files.

    Works on the raw data of every parsed paper file, valid or not, so a file with a schema
    error still gets its reference errors in the same run.
    """
    issues: list[Issue] = []
    families = kb.nodes_of_kind("family")
    causes = {k[len(CAUSE_ROOT) + 1:]: n for k, n in kb.nodes_of_kind("cause").items()}
    pools = {"paper": kb.papers, "method": kb.methods, "benchmark": kb.benchmarks, "model": kb.models}

    def ref(src: SourceFile, loc: tuple, value: str, pool, what: str, hint: str = "") -> None:
        if value in kb.invalid.get(what, ()):
            return  # declared in a file whose own errors are reported already
        if value not in pool:
            msg = f"unknown {what} {value!r}{did_you_mean(value, pool)}"
            issues.append(Issue(src.path, src.line_of(loc), _key_path(loc), msg + hint))

    for full, node in kb.taxonomy.items():
        src = kb.files.get(f"taxonomy:{full}")
        loc = _taxonomy_loc(kb, full)
        for i, pid in enumerate(node.references):
            ref(src, loc + ("references", i), pid, kb.papers, "paper")

    seen_keys: dict[tuple[str, str], tuple[str, int, str]] = {}
    for src in kb.paper_sources:
        d = src.data
        pid = _text(d.get("id")) or src.path
        for i, tag in _texts(d.get("tags")):
            ref(src, ("tags", i), tag, kb.taxonomy, "taxonomy node")
        for i, cited in _texts(d.get("cites")):
            if cited == pid:
                issues.append(Issue(src.path, src.line_of(("cites", i)), f"cites[{i}]", "a paper cannot cite itself"))
            else:
                ref(src, ("cites", i), cited, kb.papers, "paper")
        intro = d.get("introduces") if isinstance(d.get("introduces"), dict) else {}
        for i, m in _dicts(intro.get("methods")):
            base = ("introduces", "methods", i)
            if family := _text(m.get("family")):
                ref(src, base + ("family",), family, families, "mitigation family", " (a taxonomy node of kind 'family')")
            targets = m.get("targets") if isinstance(m.get("targets"), dict) else {}
            for j, c in _texts(targets.get("causes")):
                ref(src, base + ("targets", "causes", j), c, causes, "cause", " (written without the 'cause/' prefix)")
            for j, e in _texts(m.get("extends")):
                ref(src, base + ("extends", j), e, kb.methods, "method")
        for i, r in _dicts(d.get("reported")):
            base = ("reported", i)
            for what in ("model", "benchmark", "method"):
                if value := _text(r.get(what)):
                    ref(src, base + (what,), value, pools[what], what)
            bench = kb.benchmarks.get(_text(r.get("benchmark")) or "")
            if bench is not None and bench.splits and (split := _text(r.get("split"))):
                ref(src, base + ("split",), split, bench.splits, f"split of {bench.id}")
        # The same paper twice: same arXiv id, DOI or normalised title.
        doi, title = _text(d.get("doi")), _text(d.get("title"))
        for key, value in (("arxiv", _text(d.get("arxiv"))), ("doi", doi and doi.lower()), ("title", title and normalise_title(title))):
            if not value:
                continue
            line = src.line_of((key,))
            if (key, value) in seen_keys:
                other_path, other_line, other_id = seen_keys[(key, value)]
                label = {"arxiv": "arXiv id", "doi": "DOI", "title": "title"}[key]
                # Reported on both files, each naming the other: either may be the newcomer.
                issues.append(Issue(src.path, line, key, f"duplicate paper: same {label} as {other_path}:{other_line} ({other_id})"))
                issues.append(Issue(other_path, other_line, key, f"duplicate paper: same {label} as {src.path}:{line} ({pid})"))
            else:
                seen_keys[(key, value)] = (src.path, line, pid)
    return issues


def _taxonomy_loc(kb: KnowledgeBase, full: str) -> tuple:
    """YAML location of a taxonomy node inside its file, rebuilt from the parent chain."""
    chain = []
    cur: Optional[str] = full
    while kb.parent.get(cur) is not None:
        parent = kb.parent[cur]
        siblings = kb.taxonomy[parent].children
        idx = next(i for i, c in enumerate(siblings) if f"{parent}/{c.id}" == cur)
        chain.append(idx)
        cur = parent
    loc: tuple = ()
    for idx in reversed(chain):
        loc += ("children", idx)
    return loc
