"""Render the knowledge base into Markdown pages for mkdocs, then build the site.

Pages are generated *before* the build (no build-time plugin), so any builder that
reads mkdocs.yml can build them. Every string that comes from a record goes
through Jinja's autoescape inside an HTML block: a record can never inject markup,
script, or Markdown links. Output is deterministic: sorted iteration, no dates.

>>> rel_url("papers/a.md", "methods/vcd.md")
'../../methods/vcd/'
"""
from __future__ import annotations

import json
import os
import posixpath
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Sequence

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from plugins.api import BASELINE, ComparisonRecord, ResultRecord

from .causes import (DIAGNOSTIC_COLUMNS, DIAGNOSTICS_BENCHMARK, cause_arms, cause_results, diagnostics_tables, layer_series,
                     method_diagnostics)
from .guide import PAGES_DIR, GuideData, guide_context, md_inert, page_sources, read_guide_data
from .load import KnowledgeBase
from .memo import BUILD_STAMP, MEMO_DIR, Memo, build_inputs, digest, stamp_matches, write_stamp
from .reproduced import protocol_text, reproduction_tables, side_by_side
from .verdicts import mirage_rows, mirage_summary, verdict_summary, verdict_tables
from .results_index import ResultsIndex, read_results_index
from .schema import Paper
from .tables import coverage_families_causes, coverage_methods_levels, survey_table1, survey_table2, survey_table3

# matplotlib (site_gen.plots) and networkx (site_gen.graph) are imported only when a plot or the
# explorer's data must really be made: a run where nothing changed takes them from the memo.
DOCS_DIR = Path("build/docs")
TEMPLATES = Path(__file__).parent / "templates"


def page_dir(page: str) -> str:
    """URL directory of a page under use_directory_urls: ``a/b.md`` → ``a/b/``, ``a/index.md`` → ``a/``."""
    stem = page[: -len(".md")]
    if stem == "index" or stem.endswith("/index"):
        stem = stem[: -len("index")]
        return stem
    return stem + "/"


def rel_url(from_page: str, to_page: str) -> str:
    rel = posixpath.relpath(page_dir(to_page) or ".", page_dir(from_page) or ".")
    return "./" if rel == "." else rel + "/"


def asset_url(from_page: str, path: str) -> str:
    """URL of a generated file (``plots/x.svg``) relative to a page."""
    return posixpath.relpath(path, page_dir(from_page) or ".")


def taxonomy_page(full_id: str) -> str:
    return f"taxonomy/{full_id.replace('/', '.')}.md"


def record_page(kind: str, ident: str) -> str:
    return f"{kind}s/{ident}.md"


def plain_title(text: str) -> str:
    """Front-matter title for nav and <title>: markup characters removed, one line (apostrophes kept:
    "The survey's tables"), as a quoted YAML string.

    >>> print(plain_title("The survey's tables [draft]"))
    "The survey's tables draft"
    """
    return json.dumps(re.sub(r"[<>&\"`\\{}\[\]]", "", " ".join(text.split()))[:150], ensure_ascii=False)


def bibtex(p: Paper) -> str:
    kind = "article" if (p.arxiv and not p.venue) or (p.venue or "").lower().startswith("arxiv") else "inproceedings"
    fields = [("title", "{" + p.title + "}"), ("author", " and ".join(p.authors))]
    if p.year:
        fields.append(("year", str(p.year)))
    if p.venue:
        fields.append(("journal" if kind == "article" else "booktitle", p.venue))
    if p.arxiv:
        fields += [("eprint", p.arxiv), ("archivePrefix", "arXiv")]
    if p.doi:
        fields.append(("doi", p.doi))
    if p.url:
        fields.append(("url", p.url))
    body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields)
    return f"@{kind}{{{p.id},\n{body}\n}}"


PAPERS_PER_PAGE = 500
EXPLORER_TYPES = ("taxonomy", "method", "benchmark", "model", "paper")
"""Node types shown in the graph explorer (reported-result nodes have no page of their own)."""


def kb_digest(kb: KnowledgeBase) -> str:
    """Hash of everything the pages read from the knowledge base: each record file's data and where each id is defined."""
    sources = {src.path: src.data for src in [*kb.files.values(), *kb.paper_sources]}
    return digest(sources, sorted(kb.where.items()))


def _in_order(value):
    """Dicts as lists of items, so a hash sees their order (a plot's legend follows it)."""
    if isinstance(value, dict):
        return [["dict"], [[k, _in_order(v)] for k, v in value.items()]]
    if isinstance(value, (list, tuple)):
        return [_in_order(v) for v in value]
    return value


class Renderer:
    def __init__(self, kb: KnowledgeBase, repo_edit_url: Optional[str] = None,
                 results: Sequence[ResultRecord] = (), stale_cells: frozenset[str] = frozenset(),
                 index: Optional[ResultsIndex] = None, guide: Optional[GuideData] = None,
                 memo: Optional[Memo] = None, kb_key: Optional[str] = None,
                 comparisons: Sequence[ComparisonRecord] = (), results_dir: Optional[Path] = None):
        self.kb = kb
        self.results_dir = results_dir  # where the records' predictions are (the causes' bootstrap reads them)
        self.comparisons = list(comparisons)  # results/comparisons.json: the only source of verdicts
        self.repo_edit_url = repo_edit_url
        # Method results feed the tables beside the survey's methods; arms of cause experiments and
        # diagnostics records have pages of their own (site_gen.causes).
        arms = cause_arms(kb)
        self.all_results = list(results)
        self.results = [r for r in results if r.method not in arms and r.benchmark != DIAGNOSTICS_BENCHMARK]
        self.stale_cells = stale_cells
        self.index = index or ResultsIndex()
        self.guide = guide
        self.memo = memo or Memo(None)
        self._kb_key = kb_key
        self.env = Environment(
            loader=FileSystemLoader(str(TEMPLATES)),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.pages: dict[str, str] = {}
        self.assets: dict[str, str] = {}  # generated files that are not pages: plots, graph data
        self._cited_by: dict[str, list[str]] = {}
        # Reported results indexed once by method, benchmark and model: a page looks up its own
        # rows instead of scanning every paper (the site must scale to 10k papers).
        self._reported: dict[tuple[str, Optional[str]], list] = {}
        for pid, p in sorted(kb.papers.items()):
            for c in p.cites:
                self._cited_by.setdefault(c, []).append(pid)
            for r in p.reported:
                for field in ("method", "benchmark", "model"):
                    self._reported.setdefault((field, getattr(r, field)), []).append((pid, r))

    # ------------------------------------------------------------ helpers used by templates
    def embedded_parameters(self, model: str) -> Optional[int]:
        """Parameter count of ``model`` when it is a checkpoint committed here (the embedded tiny model), else None."""
        card = self.guide.checkpoints.get(model) if self.guide is not None else None
        total = ((card or {}).get("log") or {}).get("parameters", {}).get("total")
        return total if isinstance(total, int) else None

    def link(self, here: str, kind: str, ident: str) -> dict:
        """``{"href", "label"}`` for a record, or a plain label if there is no page for it."""
        if kind == "taxonomy":
            node = self.kb.taxonomy.get(ident)
            return {"href": rel_url(here, taxonomy_page(ident)), "label": node.name if node else ident}
        store = {"paper": self.kb.papers, "method": self.kb.methods, "benchmark": self.kb.benchmarks, "model": self.kb.models}[kind]
        rec = store.get(ident)
        label = (rec.title if kind == "paper" else rec.name) if rec else ident
        return {"href": rel_url(here, record_page(kind, ident)), "label": label}

    def render(self, page: str, template: str, title: str, wide: bool = False, **ctx) -> None:
        """Render one page; ``wide`` pages (big tables, the explorer) drop the table-of-contents sidebar."""
        body = self.env.get_template(template).render(here=page, title=title, r=self, kb=self.kb, **ctx)
        # One HTML block with no blank line, so Markdown never parses record text.
        body = "\n".join(line for line in body.splitlines() if line.strip())
        hide = "hide:\n  - toc\n" if wide else ""
        self.pages[page] = f"---\ntitle: {plain_title(title)}\n{hide}---\n\n<div class=\"as-page\">\n{body}\n</div>\n"

    def cite(self, here: str, pid: str) -> dict:
        """A short author-year link to a paper (``Shu et al., 2025``), for table cells."""
        p = self.kb.papers.get(pid)
        if p is None:
            return {"href": rel_url(here, record_page("paper", pid)), "label": pid}
        def surname(author: str) -> str:  # "Dong Shu" and "Shu, Dong" both give "Shu"
            return author.split(",")[0].split()[-1] if "," in author else author.split()[-1]

        first = surname(p.authors[0]) if p.authors else pid
        more = " et al." if len(p.authors) > 2 else (f" and {surname(p.authors[1])}" if len(p.authors) == 2 else "")
        return {"href": rel_url(here, record_page("paper", pid)), "label": f"{first}{more}, {p.year}" if p.year else f"{first}{more}"}

    def asset(self, here: str, path: str) -> str:
        return asset_url(here, path)

    def url(self, here: str, page: str) -> str:
        return rel_url(here, page)

    def is_stale(self, record: ResultRecord) -> bool:
        return record.cell in self.stale_cells

    def not_in_matrix(self, record: ResultRecord) -> bool:
        return self.index.found and record.cell not in self.index.cells

    def edit_link(self, kind: str, ident: str) -> dict:
        path, line = self.kb.where[f"{kind}:{ident}"]
        href = f"{self.repo_edit_url.rstrip('/')}/{path}" if self.repo_edit_url else None
        return {"path": path, "line": line, "href": href}

    # ------------------------------------------------------------ pages
    def build(self) -> dict[str, str]:
        kb = self.kb
        self.render("index.md", "home.html.j2", "AlignScope", counts=kb.counts(), n_reproduced=len(self.all_results))
        self.render("taxonomy/index.md", "taxonomy_index.html.j2", "Taxonomy", roots=sorted(k for k, v in kb.parent.items() if v is None))
        for full, node in sorted(kb.taxonomy.items()):
            page = taxonomy_page(full)
            children = [f"{full}/{c.id}" for c in node.children]
            methods = sorted(m for m, rec in kb.methods.items() if rec.family == full)
            level = full.split("/", 1)[1] if full.startswith("level/") else None
            cause = full.split("/", 1)[1] if full.startswith("cause/") else None
            methods += sorted(m for m, rec in kb.methods.items() if (level and level in rec.targets.levels) or (cause and cause in rec.targets.causes))
            benchmarks = sorted(b for b, rec in kb.benchmarks.items() if level and getattr(rec.dimensions, level))
            papers = sorted(p for p, rec in kb.papers.items() if full in rec.tags)
            self.render(page, "taxonomy.html.j2", node.name, node=node, full=full, parent=kb.parent[full], children=children,
                        methods=sorted(set(methods)), benchmarks=benchmarks, papers=papers)
        fam_plot = self.plot("papers-by-family-and-year", "stacked_bars_svg",
                             self._families_by_year(), "Papers per mitigation family and year", "papers")
        # The paper list is split into pages of PAPERS_PER_PAGE so no page grows with the knowledge base.
        ordered = sorted(kb.papers.values(), key=lambda p: (-(p.year or 0), p.id))
        chunks = [ordered[i:i + PAPERS_PER_PAGE] for i in range(0, len(ordered), PAPERS_PER_PAGE)] or [[]]
        pager = [(n, "papers/index.md" if n == 1 else f"papers/list/{n}.md", c[0].title[:60] if c else "", c[-1].title[:60] if c else "")
                 for n, c in enumerate(chunks, start=1)]
        for (n, page, _, _), chunk in zip(pager, chunks):
            self.render(page, "papers_index.html.j2", "Papers" if n == 1 else f"Papers, page {n}", papers=chunk, total=len(ordered),
                        page_no=n, pager=pager, fam_plot=fam_plot)
        for pid, p in sorted(kb.papers.items()):
            self.render(record_page("paper", pid), "paper.html.j2", p.title, p=p, bib=bibtex(p), reported=[(pid, r) for r in p.reported], cited_by=self._cited_by.get(pid, []),
                        edit=self.edit_link("paper", pid))
        self.render("methods/index.md", "methods_index.html.j2", "Methods", methods=sorted(kb.methods.values(), key=lambda m: (m.family, m.name.lower())))
        extended_by: dict[str, list[str]] = {}
        for x, rec in sorted(kb.methods.items()):
            for e in rec.extends:
                extended_by.setdefault(e, []).append(x)
        tables = reproduction_tables(self.results, self.stale_cells)
        diag_tables = diagnostics_tables(self.all_results, cause_arms(kb), self.stale_cells)
        for mid, m in sorted(kb.methods.items()):
            verdicts = verdict_tables(self.comparisons, self.all_results, self.stale_cells, method=mid)
            page = record_page("method", mid)
            diag = method_diagnostics(diag_tables, mid)
            diag_plot = None
            for t in diag_tables:
                series = {k: v for k, v in layer_series(t, "image_attention").items() if k in (BASELINE, mid)}
                if t.split == "pope-adversarial" and mid in series and BASELINE in series:
                    diag_plot = self.plot(f"diagnostics-{t.model}-{t.split}-image_attention-{mid}", "lines_svg",
                                          series, 1, f"{t.model}, {t.split}: attention to image tokens", "decoder layer",
                                          "share of attention on image tokens")
            self.render(page, "method.html.j2", m.name, m=m, paper=kb.introduced_by[f"method:{mid}"],
                        reported=self.results_for("method", mid), reproduced=self.reproduced_for("method", mid),
                        extended_by=extended_by.get(mid, []), verdicts=verdicts, verdict_summary=verdict_summary(verdicts),
                        diag=diag, diag_plot=diag_plot)
        self.render("benchmarks/index.md", "benchmarks_index.html.j2", "Benchmarks", benchmarks=sorted(kb.benchmarks.values(), key=lambda b: b.name.lower()))
        for bid, b in sorted(kb.benchmarks.items()):
            self.render(record_page("benchmark", bid), "benchmark.html.j2", b.name, b=b, paper=kb.introduced_by[f"benchmark:{bid}"],
                        reported=self.results_for("benchmark", bid), reproduced=self.reproduced_for("benchmark", bid))
        self.render("models/index.md", "models_index.html.j2", "Models", models=sorted(kb.models.values(), key=lambda m: m.name.lower()))
        for mid, m in sorted(kb.models.items()):
            self.render(record_page("model", mid), "model.html.j2", m.name, m=m, paper=kb.introduced_by[f"model:{mid}"],
                        reported=self.results_for("model", mid))
        t1 = survey_table1(kb)
        t1_points = [(row.label, row.seconds_per_input, row.cells[("adversarial", "accuracy")]) for row in t1
                     if row.seconds_per_input is not None and row.cells.get(("adversarial", "accuracy")) is not None]
        t1_plot = self.plot("survey-table1-accuracy-vs-cost", "pareto_svg",
                            t1_points, "Reported in the survey's Table 1 (LLaVA-1.5-7B, POPE adversarial)",
                            "seconds per input (reported)", "accuracy, % (reported)") if t1_points else None
        self.render("tables.md", "tables.html.j2", "The survey's tables", wide=True, t1=t1, t2=survey_table2(kb), t3=survey_table3(kb), t1_plot=t1_plot)
        self.render("coverage.md", "coverage.html.j2", "Coverage", wide=True, levels=coverage_methods_levels(kb), causes=coverage_families_causes(kb),
                    fam_plot=fam_plot)
        repro_plots = {}
        for t in tables:
            split = next((s for s in ("adversarial", "popular", "random") if s in t.splits), None)
            points = [(row.method, row.seconds_per_input, 100 * row.cells[(split, "accuracy")].value) for row in t.rows
                      if (split, "accuracy") in row.cells]
            if points:
                repro_plots[t.anchor] = self.plot(f"reproduced-{t.anchor}", "pareto_svg",
                                                  points, f"Reproduced: {t.model}, {t.benchmark} {split}",
                                                  "seconds per input (measured)", "accuracy, % (measured)")
        self.render("reproduction.md", "reproduction.html.j2", "Reproduction", wide=True, tables=tables, pairs=side_by_side(kb, tables),
                    plots=repro_plots, baseline=BASELINE, orphans=self.index.not_in_matrix(self.all_results))
        self._verdicts_page()
        self._causes_and_diagnostics()
        self.assets["assets/graph.json"] = self._graph_json()
        self.render("graph.md", "graph.html.j2", "Graph explorer", wide=True, types=EXPLORER_TYPES)
        self._guide_pages()
        return self.pages

    def protocol_text(self, table: Any) -> str:
        """The decoding protocol of a reproduction table in words (from its first record; all agree)."""
        texts = sorted({protocol_text(r.provenance.decoding) for r in table.records})
        return " / ".join(texts)

    def _verdicts_page(self) -> None:
        """Every comparison record, one table (a Holm family) per model, benchmark, split, protocol and metric."""
        tables = verdict_tables(self.comparisons, self.all_results, self.stale_cells)
        plots = {}
        for t in tables:
            rows = [(f"{row.c.method} vs {row.c.reference}", 100 * row.c.effect, 100 * row.c.low, 100 * row.c.high,
                     row.c.verdict) for row in t.rows]
            if rows:
                better = "higher is better" if t.higher_is_better else "lower is better"
                plots[t.anchor] = self.plot(f"verdicts-{t.anchor}", "forest_svg", rows,
                                            f"{t.model}: {t.title} ({t.protocol})",
                                            f"method − reference, points ({better}); bars: 95 % intervals")
        mirage = mirage_rows(self.comparisons, self.all_results, self.stale_cells)
        self.render("verdicts.md", "verdicts.html.j2", "Verdicts", wide=True, tables=tables, plots=plots,
                    summary=verdict_summary(tables), mirage=mirage, mirage_summary=mirage_summary(mirage),
                    paper_protocols=self.guide.paper_protocols if self.guide is not None else [])

    def _guide_pages(self) -> None:
        """The hand-written pages of site_gen/pages/, as Markdown whose every inserted value is inert."""
        env = Environment(
            loader=ChoiceLoader([FileSystemLoader(str(PAGES_DIR)), FileSystemLoader(str(TEMPLATES))]),
            autoescape=True, finalize=lambda v: v if isinstance(v, Markup) else Markup(md_inert(str(v))),
            undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        )
        env.filters["thousands"] = lambda v: f"{v:,}"
        env.filters["json"] = lambda v, indent=None: json.dumps(v, sort_keys=True, ensure_ascii=False, indent=indent)  # plain text: made inert like any value
        g = guide_context(self.kb, self.all_results, self.index, self.guide, self.stale_cells)
        plots = {}
        stages = [(s.get("name", f"stage {i}"), s["losses"]) for i, s in enumerate(g.card["log"].get("stages", []))
                  if isinstance(s, dict) and s.get("losses")] if g.card else []
        if stages:
            plots["losses"] = self.plot(f"training-losses-{g.model}", "loss_curves_svg", stages, f"{g.model}: training loss per stage")
        for page, template in page_sources().items():
            self.pages[page] = env.get_template(template).render(here=page, r=self, kb=self.kb, g=g, plots=plots)

    def _causes_and_diagnostics(self) -> None:
        causes = cause_results(self.kb, self.all_results, self.stale_cells, self.results_dir)
        plots = {}
        for c in causes:
            if c.rows:
                plots[c.anchor] = self.plot(f"cause-{c.anchor}", "paired_svg",
                                            [(row.seed, row.control, row.treated) for row in c.rows], c.experiment.control,
                                            c.experiment.treated, f"{c.node.name}: {c.experiment.treated} vs {c.experiment.control}",
                                            c.measure_text)
        self.render("causes.md", "causes.html.j2", "Causes as experiments", wide=True, causes=causes, plots=plots)
        arms = cause_arms(self.kb)
        tables = diagnostics_tables(self.all_results, arms, self.stale_cells)
        layer_plots = {}
        for t in tables:
            for prefix, label in (("image_attention", "share of attention on image tokens"),
                                  ("lens_logp", "log p(answer) read at the layer")):
                series = layer_series(t, prefix)
                if series:
                    first = 1 if prefix == "image_attention" else 0  # attention is per decoder layer, the lens per hidden state
                    layer_plots[(t.split, prefix)] = self.plot(f"diagnostics-{t.model}-{t.split}-{prefix}", "lines_svg",
                                                               series, first, f"{t.model}, {t.split}: {label}", "layer", label)
        self.render("diagnostics.md", "diagnostics.html.j2", "Diagnostics", wide=True, tables=tables,
                    columns=DIAGNOSTIC_COLUMNS, layer_plots=layer_plots)

    def results_for(self, field: str, value: str) -> list[tuple[str, object]]:
        """Reported results ``(paper id, result)`` whose ``field`` (method, benchmark or model) equals ``value``."""
        return self._reported.get((field, value), [])

    def reproduced_for(self, field: str, value: str) -> list[ResultRecord]:
        return [r for r in self.results if getattr(r, field) == value or (field == "benchmark" and r.follows == value)]

    # ------------------------------------------------------------ plots and graph data
    def plot(self, name: str, draw: str, *args) -> str:
        """Draw ``site_gen.plots.<draw>(*args)`` as ``plots/<name>.svg`` (or take it from the memo); returns its path."""
        key = digest(self.memo.salt, draw, _in_order(args))
        svg = self.memo.get("plots", key)
        if svg is None:
            from . import plots

            svg = getattr(plots, draw)(*args).encode("utf-8")
            self.memo.put("plots", key, svg)
        path = f"plots/{name}.svg"
        self.assets[path] = svg.decode("utf-8")
        return path

    def _families_by_year(self) -> dict[str, dict[int, int]]:
        kb = self.kb
        counts: dict[str, dict[int, int]] = {}
        for p in kb.papers.values():
            if not p.year:
                continue
            fams = {m.family for m in p.introduces.methods}
            fams |= {t for t in p.tags if t in kb.taxonomy and kb.taxonomy[t].kind == "family"}
            for fam in fams:
                per_year = counts.setdefault(kb.taxonomy[fam].name, {})
                per_year[p.year] = per_year.get(p.year, 0) + 1
        return counts

    def _graph_json(self) -> str:
        key = digest(self.memo.salt, self._kb_key or kb_digest(self.kb))
        cached = self.memo.get("graph", key)
        if cached is None:
            cached = (json.dumps(self._graph_data(), ensure_ascii=False, separators=(",", ":"), sort_keys=True) + "\n").encode("utf-8")
            self.memo.put("graph", key, cached)
        return cached.decode("utf-8")

    def _graph_data(self) -> dict:
        """Compact node-link data for the explorer: nodes ``[type, label, url]``, links ``[source, target, type]``."""
        from .graph import build_graph

        g = build_graph(self.kb)
        keep = sorted(n for n, a in g.nodes(data=True) if a["type"] in EXPLORER_TYPES)
        index = {n: i for i, n in enumerate(keep)}
        nodes = []
        for n in keep:
            a = g.nodes[n]
            page = taxonomy_page(a["ref"]) if a["type"] == "taxonomy" else record_page(a["type"], a["ref"])
            nodes.append([a["type"], a["label"], page_dir(page)])
        links = sorted({(index[u], index[v], t) for u, v, t in g.edges(data="type") if u in index and v in index})
        return {"types": list(EXPLORER_TYPES), "nodes": nodes, "links": [list(link) for link in links]}


def generate_docs(kb: KnowledgeBase, root: Path, repo_edit_url: Optional[str] = None,
                  results: Sequence[ResultRecord] = (), stale_cells: frozenset[str] = frozenset(),
                  index: Optional[ResultsIndex] = None, guide: Optional[GuideData] = None, memo: bool = True,
                  comparisons: Sequence[ComparisonRecord] = ()) -> int:
    """Bring ``root/build/docs`` in line with the records; return the page count.

    Only files whose content changed are rewritten and files no longer generated are removed,
    so a live preview reloads just what changed. With ``memo``, a docs tree made before from the
    same inputs is reused and plots whose data did not change are not drawn again (site_gen.memo);
    without it, everything is made afresh (the bytes are the same).
    """
    root = Path(root)
    guide = guide if guide is not None else read_guide_data(root)
    index = index or ResultsIndex()
    cache = Memo(root / MEMO_DIR if memo else None)
    kb_key = kb_digest(kb)
    key = digest(cache.salt, kb_key, repo_edit_url, [r.model_dump_json() for r in results], sorted(stale_cells),
                 asdict(index), guide.key(), [c.model_dump_json() for c in comparisons])
    made = cache.get("tree", key)
    try:
        tree = json.loads(made) if made is not None else None
    except ValueError:  # a damaged entry is made again
        tree = None
    if not (isinstance(tree, dict) and isinstance(tree.get("files"), dict)):
        renderer = Renderer(kb, repo_edit_url, results, stale_cells, index, guide, cache, kb_key, comparisons,
                            results_dir=root / "results")
        pages = renderer.build()
        tree = {"pages": len(pages), "files": {**pages, **renderer.assets}}
        cache.put("tree", key, json.dumps(tree, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        cache.prune("plots")
        cache.prune("graph")
    cache.prune("tree")
    files = {rel: text.encode("utf-8") for rel, text in tree["files"].items()}
    for asset in sorted((TEMPLATES / "assets").rglob("*")):
        if asset.is_file():
            files[f"assets/{asset.relative_to(TEMPLATES / 'assets').as_posix()}"] = asset.read_bytes()
    sync_tree(root / DOCS_DIR, files)
    return tree["pages"]


def sync_tree(out: Path, files: dict[str, bytes]) -> None:
    """Make ``out`` hold exactly ``files`` (relative path → bytes), touching only what differs."""
    for rel, data in sorted(files.items()):
        path = out / rel
        if path.is_file() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if out.is_dir():
        for path in sorted(out.rglob("*"), reverse=True):  # children before their folders
            rel = path.relative_to(out).as_posix()
            if path.is_file() and rel not in files:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def mkdocs_config(root: Path) -> dict:
    """``root/mkdocs.yml`` as data, tolerating mkdocs' custom tags (``!!python/name:...`` is read as null, never run)."""
    import yaml

    class _Lenient(yaml.SafeLoader):
        pass

    _Lenient.add_multi_constructor("", lambda loader, suffix, node: None)
    path = Path(root) / "mkdocs.yml"
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Lenient) if path.is_file() else None
    return data if isinstance(data, dict) else {}


def site_settings(root: Path) -> dict:
    """AlignScope's own settings from ``mkdocs.yml`` (``extra.alignscope``)."""
    extra = mkdocs_config(root).get("extra") or {}
    return dict(extra.get("alignscope") or {})


def load_checkout_comparisons(root: Path) -> tuple[list[ComparisonRecord], list[str]]:
    """The comparison records of ``root/results`` and what could not be read, as warning lines."""
    from plugins.api import read_comparisons

    comparisons, problems = read_comparisons(Path(root) / "results")
    return comparisons, [f"comparison left out: {p}" for p in problems]


def load_checkout_results(root: Path) -> tuple[list[ResultRecord], ResultsIndex, list[str]]:
    """The result records of ``root/results``, the runner's index, and every problem as a warning line.

    The index and the runner's error files (``*.error.json``) live beside the records; ``load_results``
    reads records only (``seed<k>.json``). A record whose predictions file is missing or no longer
    hashes to what the record says is shown stale, with a warning, whatever the index says.
    """
    from plugins.api import load_results, predictions_problem, result_path

    results_dir = Path(root) / "results"
    records, problems = load_results(results_dir)
    problems = [f"result left out: {p}" for p in problems]
    index = read_results_index(results_dir, has_records=bool(records))
    damaged = {}
    for r in records:
        why = predictions_problem(result_path(results_dir, r), r.model_dump(mode="json"))
        if why is not None:
            damaged[r.cell] = why
    problems += [f"result shown stale: results/{cell}: {why}; `make reproduce` runs it again"
                 for cell, why in sorted(damaged.items())]
    return records, index.marked_stale(damaged), [*index.problems, *problems]


def generate_checkout(root: Path, kb: KnowledgeBase, memo: bool = True) -> tuple[int, list[str]]:
    """Generate the docs of a checkout from its records, ``results/`` and its index; returns (pages, warnings).

    Stale results are those ``results/index.json`` marks (site_gen.results_index): the runner is never imported.
    """
    records, index, problems = load_checkout_results(root)
    comparisons, more = load_checkout_comparisons(root)
    n = generate_docs(kb, root, site_settings(root).get("record_edit_url"), records, index.stale_cells(records), index,
                      memo=memo, comparisons=comparisons)
    return n, problems + more


def build_site(root: Path, force: bool = False) -> bool:
    """``mkdocs build --strict`` in ``root``, unless nothing it reads changed since the last build; True if it ran.

    Raises ``RuntimeError`` with mkdocs' output on failure. The build date is pinned
    (``SOURCE_DATE_EPOCH``, unless set) so that two builds of the same pages are byte-identical.
    """
    root = Path(root)
    config = mkdocs_config(root)
    docs_dir = root / str(config.get("docs_dir") or "docs")
    site_dir = root / str(config.get("site_dir") or "site")
    stamp = root / BUILD_STAMP
    inputs = build_inputs(docs_dir, root / "mkdocs.yml")
    if not force and stamp_matches(stamp, inputs, site_dir):
        return False
    stamp.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--config-file", str(root / "mkdocs.yml")],
        cwd=root, capture_output=True, text=True, env={"SOURCE_DATE_EPOCH": "0", **os.environ},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"mkdocs build failed:\n{proc.stdout}{proc.stderr}")
    write_stamp(stamp, inputs, site_dir)
    return True
