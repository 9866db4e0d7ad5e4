"""The ``alignscope`` command: a thin front door over site_gen (knowledge) and plugins (experiments).

No logic lives here beyond argument handling and printing.
"""
from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="AlignScope: a living survey of LVLM alignment and misalignment.")
graph_app = typer.Typer(no_args_is_help=True, help="Query and export the knowledge graph.")
app.add_typer(graph_app, name="graph")


class OutputFormat(str, Enum):
    text = "text"
    github = "github"


def _err(msg: str) -> None:
    typer.echo(msg, err=True)


def _load(root: Path, fmt: OutputFormat = OutputFormat.text, quiet: bool = False):
    """Load the knowledge base; print every issue and exit 1 if there are any."""
    from site_gen.load import load_knowledge_base

    t0 = time.perf_counter()
    kb, issues = load_knowledge_base(root)
    elapsed = time.perf_counter() - t0
    if issues:
        for issue in issues:
            typer.echo(issue.github() if fmt is OutputFormat.github else issue.format())
        files = len({i.path for i in issues})
        _err(f"{len(issues)} error{'s' * (len(issues) != 1)} in {files} file{'s' * (files != 1)}")
        raise typer.Exit(1)
    if not quiet:
        counts = ", ".join(f"{v} {k}" for k, v in kb.counts().items())
        typer.echo(f"ok: {counts} ({elapsed:.2f} s)")
    return kb


@app.command()
def validate(
    root: Path = typer.Argument(Path("."), help="Checkout to validate (holds taxonomy/ and papers/)."),
    format: OutputFormat = typer.Option(OutputFormat.text, "--format", help="text: path:line key: message; github: ::error annotations."),
) -> None:
    """Load every YAML record, report every error with file and line; exit 1 on any error."""
    _load(root, format)


@app.command()
def schema(
    root: Path = typer.Option(Path("."), help="Checkout whose taxonomy supplies the ID enums."),
    out: Optional[Path] = typer.Option(None, help="Write the JSON Schema here instead of standard output."),
    kind: str = typer.Option("paper", help="paper or taxonomy."),
) -> None:
    """Export the JSON Schema of a paper (or taxonomy) record, for editor completion."""
    from site_gen.jsonschema import record_schema

    if kind not in ("paper", "taxonomy"):
        _err(f"--kind must be 'paper' or 'taxonomy', not {kind!r}")
        raise typer.Exit(2)
    text = json.dumps(record_schema(kind, root), indent=2, sort_keys=True) + "\n"
    if out:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}")
    else:
        sys.stdout.write(text)


@app.command("new-paper")
def new_paper(
    bibtex: Optional[str] = typer.Argument(None, help="BibTeX file, or '-' for standard input."),
    title: Optional[str] = typer.Option(None, help="Title (overrides the BibTeX entry)."),
    author: Optional[List[str]] = typer.Option(None, help="An author, 'First Last'; repeat for each."),
    year: Optional[int] = typer.Option(None),
    venue: Optional[str] = typer.Option(None),
    arxiv: Optional[str] = typer.Option(None, help="arXiv id, e.g. 2311.16922."),
    doi: Optional[str] = typer.Option(None),
    url: Optional[str] = typer.Option(None),
    summary: Optional[str] = typer.Option(None, help="Two or three sentences in your own words."),
    tag: Optional[List[str]] = typer.Option(None, help="Taxonomy node id; repeat for each."),
    root: Path = typer.Option(Path("."), help="Checkout to add the record to."),
) -> None:
    """Create papers/<free id>.yaml from a BibTeX entry or flags, then validate the knowledge base."""
    from site_gen.load import load_knowledge_base
    from site_gen.scaffold import BibtexError, fields_from_bibtex, parse_bibtex, write_new_paper

    fields: dict = {"title": None, "authors": [], "year": None, "venue": None, "arxiv": None, "doi": None, "url": None}
    try:
        if bibtex:
            text = sys.stdin.read() if bibtex == "-" else Path(bibtex).read_text(encoding="utf-8")
            fields.update(fields_from_bibtex(parse_bibtex(text)))
    except (OSError, UnicodeDecodeError) as exc:
        _err(f"cannot read {bibtex}: {exc}")
        raise typer.Exit(2)
    except BibtexError as exc:
        _err(f"{bibtex}: {exc}")
        raise typer.Exit(2)
    overrides = {"title": title, "authors": author or None, "year": year, "venue": venue, "arxiv": arxiv, "doi": doi, "url": url}
    fields.update({k: v for k, v in overrides.items() if v})
    kb, _ = load_knowledge_base(root)
    try:
        path = write_new_paper(root, fields, summary, list(tag or []), set(kb.papers))
    except BibtexError as exc:
        _err(str(exc))
        raise typer.Exit(2)
    typer.echo(f"created {path}")
    _, issues = load_knowledge_base(root)
    mine = [i for i in issues if Path(root, i.path) == path]
    for issue in mine:
        typer.echo(issue.format())
    if mine:
        _err(f"edit {path} to fix the {len(mine)} issue(s) above, then run: alignscope validate")
        raise typer.Exit(1)
    typer.echo("the new record validates")


# ---------------------------------------------------------------- graph


def _graph(root: Path):
    from site_gen.graph import build_graph

    return build_graph(_load(root, quiet=True))


def _node(g, name: str) -> str:
    from site_gen.graph import resolve_node
    from site_gen.load import did_you_mean

    found = resolve_node(g, name)
    if found is None:
        _err(f"no single node named {name!r}{did_you_mean(name, list(g))} (use type:id, e.g. method:vcd)")
        raise typer.Exit(2)
    return found


def _level(level: str) -> str:
    if level not in ("object", "attribute", "relation"):
        _err(f"level must be object, attribute or relation, not {level!r}")
        raise typer.Exit(2)
    return level


@graph_app.command("stats")
def graph_stats(root: Path = typer.Option(Path("."))) -> None:
    """Node and edge counts by type."""
    from collections import Counter

    g = _graph(root)
    for t, n in sorted(Counter(a["type"] for _, a in g.nodes(data=True)).items()):
        typer.echo(f"node {t:<10} {n}")
    for t, n in sorted(Counter(t for *_, t in g.edges(data="type")).items()):
        typer.echo(f"edge {t:<16} {n}")


@graph_app.command("methods")
def graph_methods(level: str = typer.Argument(..., help="object, attribute or relation"), root: Path = typer.Option(Path("."))) -> None:
    """Methods that target a misalignment level."""
    from site_gen.graph import methods_for_level

    for m in methods_for_level(_graph(root), _level(level)):
        typer.echo(m)


@graph_app.command("benchmarks")
def graph_benchmarks(level: str = typer.Argument(..., help="object, attribute or relation"), root: Path = typer.Option(Path("."))) -> None:
    """Benchmarks whose dimensions cover a misalignment level."""
    from site_gen.graph import benchmarks_for_level

    for b in benchmarks_for_level(_graph(root), _level(level)):
        typer.echo(b)


@graph_app.command("tree")
def graph_tree(node: str = typer.Argument("mitigation", help="Taxonomy id of the subtree root."), root: Path = typer.Option(Path("."))) -> None:
    """The family tree below a taxonomy node, with the methods in each family."""
    from site_gen.graph import family_tree

    g = _graph(root)
    try:
        tree = family_tree(g, node)
    except KeyError:
        _node(g, f"taxonomy:{node}")
        raise

    def show(t: dict, depth: int) -> None:
        methods = f"  [{', '.join(t['methods'])}]" if t["methods"] else ""
        typer.echo(f"{'  ' * depth}{t['id']}  ({t['label']}){methods}")
        for c in t["children"]:
            show(c, depth + 1)

    show(tree, 0)


@graph_app.command("papers")
def graph_papers(node: str = typer.Argument(..., help="Taxonomy id, e.g. mitigation/parameter-frozen."), root: Path = typer.Option(Path("."))) -> None:
    """Papers tagged with a taxonomy node (or below it), or introducing a method in it."""
    from site_gen.graph import papers_in_family

    g = _graph(root)
    _node(g, f"taxonomy:{node}")
    for p in papers_in_family(g, node):
        typer.echo(p)


@graph_app.command("neighbours")
def graph_neighbours(node: str = typer.Argument(..., help="type:id or a unique id, e.g. method:vcd."), root: Path = typer.Option(Path("."))) -> None:
    """Every edge touching a node."""
    from site_gen.graph import neighbours

    g = _graph(root)
    for direction, kind, other in neighbours(g, _node(g, node)):
        arrow = "->" if direction == "out" else "<-"
        typer.echo(f"{arrow} {kind:<16} {other}")


@graph_app.command("export")
def graph_export(
    graphml: Optional[Path] = typer.Option(None, help="Write GraphML here."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write node-link JSON here."),
    root: Path = typer.Option(Path(".")),
) -> None:
    """Export the graph as GraphML and/or node-link JSON."""
    from site_gen.graph import export_graphml, export_node_link

    if not graphml and not json_path:
        _err("give --graphml FILE and/or --json FILE")
        raise typer.Exit(2)
    g = _graph(root)
    if graphml:
        export_graphml(g, graphml)
        typer.echo(f"wrote {graphml}")
    if json_path:
        export_node_link(g, json_path)
        typer.echo(f"wrote {json_path}")


# ---------------------------------------------------------------- site


@app.command()
def site(
    root: Path = typer.Option(Path("."), help="Checkout holding taxonomy/, papers/, results/ and mkdocs.yml."),
    build: bool = typer.Option(True, help="Run 'mkdocs build --strict' after generating the pages."),
    force: bool = typer.Option(False, help="Make every page and plot afresh and rebuild, ignoring build/cache/site and the build stamp."),
) -> None:
    """Generate the docs pages from the records, then build the static site into site/ (only what changed)."""
    from site_gen.render import build_site

    kb = _load(root)
    t0 = time.perf_counter()
    n = _generate(root, kb, memo=not force)
    typer.echo(f"generated {n} pages in {time.perf_counter() - t0:.2f} s")
    if build:
        t0 = time.perf_counter()
        built = build_site(root, force=force)
        typer.echo(f"built site/ in {time.perf_counter() - t0:.2f} s" if built
                   else "site/ is up to date: nothing mkdocs reads has changed since it was built")


@app.command("list")
def list_(kind: str = typer.Argument(..., help="methods, benchmarks or models")) -> None:
    """List registered plugins with one-line summaries (no torch import: the plugin sources are scanned)."""
    from plugins.registry import RegistryError, describe

    try:
        rows = describe(kind)
    except RegistryError as exc:
        _err(str(exc))
        raise typer.Exit(2)
    width = max((len(n) for n, _ in rows), default=0)
    for name, summary in rows:
        typer.echo(f"{name:<{width}}  {summary}")


def _generate(root: Path, kb, memo: bool = True) -> int:
    """Generate the pages; stale results come from results/index.json (the runner is never imported here)."""
    from site_gen.render import generate_checkout

    n, warnings = generate_checkout(root, kb, memo=memo)
    for w in warnings:
        _err(f"warning: {w}")
    return n


@app.command()
def serve(
    root: Path = typer.Option(Path("."), help="Checkout holding taxonomy/, papers/, results/ and mkdocs.yml."),
    addr: str = typer.Option("127.0.0.1:8000", help="Address for the preview server."),
    interval: float = typer.Option(1.0, help="Seconds between checks for changed records."),
) -> None:
    """Preview the site and regenerate its pages whenever a record, a result, the matrix or a page source changes."""
    import subprocess

    from site_gen.load import load_knowledge_base
    from site_gen.watch import WATCHED, snapshot

    _generate(root, _load(root))
    watched = [root / w for w in WATCHED]
    server = subprocess.Popen([sys.executable, "-m", "mkdocs", "serve", "--dev-addr", addr, "--config-file", str(root / "mkdocs.yml")], cwd=root)
    typer.echo(f"serving on http://{addr}/ ; watching {', '.join(WATCHED)} (Ctrl-C to stop)")
    before = snapshot(watched)
    try:
        while server.poll() is None:
            time.sleep(interval)
            now = snapshot(watched)
            if now == before:
                continue
            before = now
            kb, issues = load_knowledge_base(root)
            if issues:  # keep the last good pages; show what to fix
                for issue in issues:
                    typer.echo(issue.format())
                _err(f"{len(issues)} error(s): pages not regenerated until they are fixed")
                continue
            t0 = time.perf_counter()
            n = _generate(root, kb)
            typer.echo(f"regenerated {n} pages in {time.perf_counter() - t0:.2f} s")
    except KeyboardInterrupt:
        pass
    finally:
        server.terminate()
        server.wait(timeout=10)


@app.command()
def reproduce(
    only: Optional[str] = typer.Option(None, "--only", help="Run only cells whose name (model/benchmark/split/method/seedN) matches this glob."),
    matrix: Path = typer.Option(None, help="The matrix file (default: plugins/reproduce.yaml)."),
    results: Path = typer.Option(None, help="Where result records go (default: results/)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda or cuda:N (default: the matrix's)."),
    dtype: Optional[str] = typer.Option(None, help="auto, float32, float16 or bfloat16 (default: the matrix's)."),
    batch_size: Optional[int] = typer.Option(None, help="Items per generate call (default: the matrix's)."),
    executor: str = typer.Option("local", help="local (this process) or ray (one Ray task per cell; RAY_ADDRESS selects a cluster)."),
    gpus_per_cell: float = typer.Option(0, help="GPUs each Ray task requests (executor ray)."),
    jobs: int = typer.Option(1, min=1, help="Worker processes of the local executor, each with cores/jobs threads "
                                            "(2 is faster than 1 on a 2-core CPU with the tiny model)."),
    force: bool = typer.Option(False, help="Re-run cells even when their fingerprint matches."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells and whether each would run; run nothing."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    wait: bool = typer.Option(True, help="While another run writes the same results folder, wait for it "
                                         "(--no-wait: refuse at once)."),
) -> None:
    """Run the experiment matrix; unchanged cells are skipped, each finished cell is saved at once."""
    from plugins import runner

    matrix = matrix or runner.DEFAULT_MATRIX
    results = results or runner.DEFAULT_RESULTS
    try:
        if dry_run:
            plans, _, problems = runner.dry_run(matrix, only=only, results_dir=results, dtype=dtype, echo=typer.echo)
            for p in plans:
                action = {"cached": "skip"}.get(p.status, "run ") if p.status != "error" else "fail"
                why = p.reason or (p.error.splitlines()[0] if p.error else "")
                typer.echo(f"{action}  {p.status:<6}  {p.cell.name}" + (f"  ({why})" if why else ""))
            for problem in problems:
                _err(f"not run: {problem}")
            counts = {s: sum(p.status == s for p in plans) for s in ("cached", "stale", "new", "failed", "error")}
            to_run = counts["stale"] + counts["new"] + counts["failed"]
            typer.echo(f"{to_run} of {len(plans)} cells to run ({counts['stale']} stale, {counts['new']} new, "
                       f"{counts['failed']} failed before), {counts['cached']} current, {counts['error']} cannot run"
                       + (f"; {len(problems)} problems in the matrix" if problems else ""))
            if problems:
                raise typer.Exit(1)
            return
        summary = runner.run(matrix, only=only, results_dir=results, device=device, dtype=dtype, batch_size=batch_size,
                             executor=executor, gpus_per_cell=gpus_per_cell, jobs=jobs, force=force, progress=progress,
                             wait=wait, echo=typer.echo)
    except runner.RunnerError as exc:
        _err(str(exc))
        raise typer.Exit(2)
    if summary.ran:
        typer.echo(runner.summary_table(summary))
    for cell, why in summary.failed:
        saved = runner.error_path(results, cell)
        _err(f"failed: {cell}: {why}" + (f" (traceback: {saved})" if saved.is_file() else ""))
    for problem in summary.comparison_problems:
        _err(f"not compared: {problem}")
    typer.echo(f"{len(summary.ran)} cells run, {len(summary.cached)} unchanged, {len(summary.failed)} failed"
               + (f", {len(summary.problems)} problems in the matrix (listed first)" if summary.problems else "")
               + f" in {summary.seconds:.1f} s; records in {results}; {summary.comparisons} comparisons"
               + (f" ({len(summary.comparison_problems)} pairs not comparable)" if summary.comparison_problems else ""))
    if summary.failed or summary.problems or summary.comparison_problems:
        raise typer.Exit(1)


@app.command()
def explain(
    benchmark: Optional[str] = typer.Argument(None, help="A yes/no benchmark: world-pope, world-attribute, world-relation, world-diagnostics or pope."),
    split: Optional[str] = typer.Argument(None, help="Its split, e.g. adversarial."),
    model: str = typer.Option("alignscope-tiny-llava", help="A registered model (alignscope list models) or a checkpoint directory."),
    method: str = typer.Option("baseline", help="A registered method (alignscope list methods), applied while reading, under the common (greedy) protocol."),
    method_config: Optional[str] = typer.Option(None, "--method-config", help='Its hyper-parameters as JSON, e.g. \'{"alpha": 0.5}\'.'),
    limit: int = typer.Option(200, min=1, help="First questions of the split."),
    image: Optional[Path] = typer.Option(None, help="Explain one question about this image instead of a benchmark."),
    question: Optional[str] = typer.Option(None, help="The question about --image."),
    label: Optional[str] = typer.Option(None, help="The correct answer to --question (yes or no), if known."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(64, min=1, help="Items per forward pass."),
    out: Optional[Path] = typer.Option(None, help="Write the report (summary and per-question rows) to this JSON file."),
) -> None:
    """Why does the model answer as it does? Visual dependence, attention to the image, logit lens, alignment per layer."""
    from plugins.diagnostics import DiagnosticsError
    from plugins.explain import explain as explain_questions, format_report, load_model
    from plugins.files import write_atomic
    from plugins.methods.base import MethodConfigError
    from plugins.registry import RegistryError, create_method

    try:
        config = json.loads(method_config) if method_config else None
        chosen = create_method(method, config)
    except (json.JSONDecodeError, MethodConfigError, RegistryError) as exc:
        _err(f"--method {method}: {exc}")
        raise typer.Exit(2)
    if image is not None and not image.is_file():
        _err(f"--image {image}: no such file")
        raise typer.Exit(2)
    try:
        adapter = load_model(model, device)
        report = explain_questions(adapter, method=chosen, benchmark=benchmark, split=split, limit=limit,
                                     image=image, question=question, label=label, batch_size=batch_size)
    except (DiagnosticsError, RegistryError, FileNotFoundError) as exc:
        _err(str(exc))
        raise typer.Exit(2)
    typer.echo(format_report(report, model))
    if out is not None:
        write_atomic(out, json.dumps(report, indent=1, sort_keys=True) + "\n")
        typer.echo(f"report written to {out}")


@app.command()
def train(
    out: Path = typer.Option(None, help="Checkpoint folder to write (default: the committed default checkpoint)."),
    config: Optional[Path] = typer.Option(None, help="YAML/JSON file with TrainConfig fields (the rest default)."),
    quick: bool = typer.Option(False, help="A few steps of each stage on tiny sizes (a smoke run)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Train the embedded tiny LLaVA on the synthetic world (the survey's stages; minutes on a CPU)."""
    from plugins.embedded.card import run_summary
    from plugins.embedded.train import train_default

    try:
        folder = train_default(out, config, quick=quick, progress=progress)
    except (ValueError, OSError) as exc:
        _err(f"train: {exc}")
        raise typer.Exit(2)
    typer.echo(run_summary(folder))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
