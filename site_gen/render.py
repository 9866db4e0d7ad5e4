"""Render the knowledge base into Markdown pages for mkdocs, then build the site.

Pages are generated *before* the build (no build-time plugin), so any builder that
reads mkdocs.yml can build them. Every string that comes from a record goes
through Jinja's autoescape inside an HTML block: a record can never inject markup,
script, or Markdown links. Output is deterministic: sorted iteration, no dates.

>>> rel_url("papers/a.md", "methods/vcd.md")
'../../methods/vcd/'
"""
from __future__ import annotations

import posixpath
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from .load import KnowledgeBase
from .schema import Paper
from .tables import survey_table1, survey_table2, survey_table3

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


def taxonomy_page(full_id: str) -> str:
    return f"taxonomy/{full_id.replace('/', '.')}.md"


def record_page(kind: str, ident: str) -> str:
    return f"{kind}s/{ident}.md"


def plain_title(text: str) -> str:
    """Front-matter title for nav and <title>: markup characters removed, one line."""
    return re.sub(r"[<>&\"'`\\{}\[\]]", "", " ".join(text.split()))[:150]


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


class Renderer:
    def __init__(self, kb: KnowledgeBase, repo_edit_url: Optional[str] = None):
        self.kb = kb
        self.repo_edit_url = repo_edit_url
        self.env = Environment(
            loader=FileSystemLoader(str(TEMPLATES)),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.pages: dict[str, str] = {}
        self._cited_by: dict[str, list[str]] = {}
        for pid, p in sorted(kb.papers.items()):
            for c in p.cites:
                self._cited_by.setdefault(c, []).append(pid)

    # ------------------------------------------------------------ helpers used by templates
    def link(self, here: str, kind: str, ident: str) -> dict:
        """``{"href", "label"}`` for a record, or a plain label if there is no page for it."""
        if kind == "taxonomy":
            node = self.kb.taxonomy.get(ident)
            return {"href": rel_url(here, taxonomy_page(ident)), "label": node.name if node else ident}
        store = {"paper": self.kb.papers, "method": self.kb.methods, "benchmark": self.kb.benchmarks, "model": self.kb.models}[kind]
        rec = store.get(ident)
        label = (rec.title if kind == "paper" else rec.name) if rec else ident
        return {"href": rel_url(here, record_page(kind, ident)), "label": label}

    def render(self, page: str, template: str, title: str, **ctx) -> None:
        body = self.env.get_template(template).render(here=page, title=title, r=self, kb=self.kb, **ctx)
        # One HTML block with no blank line, so Markdown never parses record text.
        body = "\n".join(line for line in body.splitlines() if line.strip())
        self.pages[page] = f"---\ntitle: \"{plain_title(title)}\"\n---\n\n<div class=\"as-page\">\n{body}\n</div>\n"

    def edit_link(self, kind: str, ident: str) -> dict:
        path, line = self.kb.where[f"{kind}:{ident}"]
        href = f"{self.repo_edit_url.rstrip('/')}/{path}" if self.repo_edit_url else None
        return {"path": path, "line": line, "href": href}

    # ------------------------------------------------------------ pages
    def build(self) -> dict[str, str]:
        kb = self.kb
        self.render("index.md", "home.html.j2", "AlignScope", counts=kb.counts())
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
        self.render("papers/index.md", "papers_index.html.j2", "Papers", papers=sorted(kb.papers.values(), key=lambda p: (-(p.year or 0), p.id)))
        for pid, p in sorted(kb.papers.items()):
            self.render(record_page("paper", pid), "paper.html.j2", p.title, p=p, bib=bibtex(p), reported=[(pid, r) for r in p.reported], cited_by=self._cited_by.get(pid, []),
                        edit=self.edit_link("paper", pid))
        self.render("methods/index.md", "methods_index.html.j2", "Methods", methods=sorted(kb.methods.values(), key=lambda m: (m.family, m.name.lower())))
        for mid, m in sorted(kb.methods.items()):
            reported = self.results_for(method=mid)
            self.render(record_page("method", mid), "method.html.j2", m.name, m=m, paper=kb.introduced_by[f"method:{mid}"], reported=reported,
                        extended_by=sorted(x for x, rec in kb.methods.items() if mid in rec.extends))
        self.render("benchmarks/index.md", "benchmarks_index.html.j2", "Benchmarks", benchmarks=sorted(kb.benchmarks.values(), key=lambda b: b.name.lower()))
        for bid, b in sorted(kb.benchmarks.items()):
            self.render(record_page("benchmark", bid), "benchmark.html.j2", b.name, b=b, paper=kb.introduced_by[f"benchmark:{bid}"],
                        reported=self.results_for(benchmark=bid))
        self.render("models/index.md", "models_index.html.j2", "Models", models=sorted(kb.models.values(), key=lambda m: m.name.lower()))
        for mid, m in sorted(kb.models.items()):
            self.render(record_page("model", mid), "model.html.j2", m.name, m=m, paper=kb.introduced_by[f"model:{mid}"],
                        reported=self.results_for(model=mid))
        self.render("tables.md", "tables.html.j2", "The survey's tables", t1=survey_table1(kb), t2=survey_table2(kb), t3=survey_table3(kb))
        return self.pages

    def results_for(self, **match) -> list[tuple[str, object]]:
        """Reported results ``(paper id, result)`` whose fields equal ``match``."""
        out = []
        for pid, p in sorted(self.kb.papers.items()):
            for r in p.reported:
                if all(getattr(r, k) == v for k, v in match.items()):
                    out.append((pid, r))
        return out


def generate_docs(kb: KnowledgeBase, root: Path, repo_edit_url: Optional[str] = None) -> int:
    """Write every page under ``root/build/docs`` (replacing what was there); return the page count."""
    pages = Renderer(kb, repo_edit_url).build()
    out = Path(root) / DOCS_DIR
    if out.exists():
        shutil.rmtree(out)
    for rel, text in sorted(pages.items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assets = TEMPLATES / "assets"
    if assets.is_dir():
        shutil.copytree(assets, out / "assets")
    return len(pages)


def build_site(root: Path) -> None:
    """``mkdocs build --strict`` in ``root``; raises ``RuntimeError`` with mkdocs' output on failure."""
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--config-file", str(Path(root) / "mkdocs.yml")],
        cwd=root, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"mkdocs build failed:\n{proc.stdout}{proc.stderr}")
