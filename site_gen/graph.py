"""The knowledge base as a typed networkx graph, and the queries the site needs.

Node keys are ``"<type>:<id>"`` (``paper:leng2024-vcd``, ``method:vcd``,
``taxonomy:level/object`` ...), each with ``type``, ``ref`` (the record id) and ``label`` attributes.
Edges carry a ``type``:

==================  =====================================================
cites               paper → paper
introduces          paper → method | benchmark | model
tagged              paper → taxonomy node
in_family           method → taxonomy node of kind family
targets_level       method | benchmark → taxonomy level node
addresses_cause     method → taxonomy cause node
extends             method → method it builds on
implemented_by      method → plugin (registered plugin name)
child_of            taxonomy node → its parent
supported_by        taxonomy node → paper the survey cites for it
reports             paper → result (a number printed in that paper)
evaluated_on        result → benchmark
on_model            result → model
measures            result → method (absent for the unmitigated model)
==================  =====================================================

>>> from pathlib import Path
>>> from site_gen.load import load_knowledge_base
>>> kb, _ = load_knowledge_base(Path("."))            # doctest: +SKIP
>>> sorted(methods_for_level(build_graph(kb), "object"))[:3]   # doctest: +SKIP
['agla', 'ara', 'avisc']
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

import networkx as nx

from .load import KnowledgeBase
from .schema import CAUSE_ROOT

NODE_TYPES = ("paper", "method", "benchmark", "model", "taxonomy", "result", "plugin")
EDGE_TYPES = (
    "cites", "introduces", "tagged", "in_family", "targets_level", "addresses_cause", "extends",
    "implemented_by", "child_of", "supported_by", "reports", "evaluated_on", "on_model", "measures",
)


class DanglingReference(ValueError):
    """An edge points at a node that does not exist."""


def key(kind: str, ident: str) -> str:
    return f"{kind}:{ident}"


def build_graph(kb: KnowledgeBase) -> nx.MultiDiGraph:
    """Build the typed graph; raises :class:`DanglingReference` if any reference does not resolve."""
    g = nx.MultiDiGraph()
    for full, node in sorted(kb.taxonomy.items()):
        g.add_node(key("taxonomy", full), type="taxonomy", ref=full, label=node.name, kind=node.kind)
    for pid, p in sorted(kb.papers.items()):
        g.add_node(key("paper", pid), type="paper", ref=pid, label=p.title, year=p.year or 0)
    for mid, m in sorted(kb.methods.items()):
        g.add_node(key("method", mid), type="method", ref=mid, label=m.name)
    for bid, b in sorted(kb.benchmarks.items()):
        g.add_node(key("benchmark", bid), type="benchmark", ref=bid, label=b.name)
    for mid, m in sorted(kb.models.items()):
        g.add_node(key("model", mid), type="model", ref=mid, label=m.name)

    def edge(src: str, dst: str, kind: str) -> None:
        for end in (src, dst):
            if end not in g:
                raise DanglingReference(f"{kind} edge {src} → {dst}: {end} does not exist")
        g.add_edge(src, dst, key=kind, type=kind)

    for full, node in sorted(kb.taxonomy.items()):
        parent = kb.parent.get(full)
        if parent:
            edge(key("taxonomy", full), key("taxonomy", parent), "child_of")
        for pid in node.references:
            edge(key("taxonomy", full), key("paper", pid), "supported_by")

    for pid, p in sorted(kb.papers.items()):
        pk = key("paper", pid)
        for cited in p.cites:
            edge(pk, key("paper", cited), "cites")
        for tag in p.tags:
            edge(pk, key("taxonomy", tag), "tagged")
        for kind, items in (("method", p.introduces.methods), ("benchmark", p.introduces.benchmarks), ("model", p.introduces.models)):
            for item in items:
                edge(pk, key(kind, item.id), "introduces")
        for i, r in enumerate(p.reported):
            rk = key("result", f"{pid}#{i}")
            label = f"{r.method or 'baseline'} · {r.model} · {r.benchmark}" + (f"/{r.split}" if r.split else "")
            g.add_node(rk, type="result", ref=f"{pid}#{i}", label=label)
            edge(pk, rk, "reports")
            edge(rk, key("benchmark", r.benchmark), "evaluated_on")
            edge(rk, key("model", r.model), "on_model")
            if r.method:
                edge(rk, key("method", r.method), "measures")

    for mid, m in sorted(kb.methods.items()):
        mk = key("method", mid)
        edge(mk, key("taxonomy", m.family), "in_family")
        for level in m.targets.levels:
            edge(mk, key("taxonomy", f"level/{level}"), "targets_level")
        for cause in m.targets.causes:
            edge(mk, key("taxonomy", f"{CAUSE_ROOT}/{cause}"), "addresses_cause")
        for base in m.extends:
            edge(mk, key("method", base), "extends")
        if m.plugin:
            pk = key("plugin", m.plugin)
            g.add_node(pk, type="plugin", ref=m.plugin, label=m.plugin)
            edge(mk, pk, "implemented_by")

    for bid, b in sorted(kb.benchmarks.items()):
        d = b.dimensions
        for level, covered in (("object", d.object), ("attribute", d.attribute), ("relation", d.relation)):
            if covered:
                edge(key("benchmark", bid), key("taxonomy", f"level/{level}"), "targets_level")
    return g


# ---------------------------------------------------------------- queries


def _sources(g: nx.MultiDiGraph, target: str, edge_type: str, node_type: str) -> list[str]:
    if target not in g:
        raise KeyError(target)
    return sorted(
        g.nodes[u]["ref"] for u, _, t in g.in_edges(target, data="type") if t == edge_type and g.nodes[u]["type"] == node_type
    )


def methods_for_level(g: nx.MultiDiGraph, level: str) -> list[str]:
    """Method IDs that target a misalignment level (``object``, ``attribute``, ``relation``)."""
    return _sources(g, key("taxonomy", f"level/{level}"), "targets_level", "method")


def benchmarks_for_level(g: nx.MultiDiGraph, level: str) -> list[str]:
    """Benchmark IDs whose dimensions cover a misalignment level."""
    return _sources(g, key("taxonomy", f"level/{level}"), "targets_level", "benchmark")


def descendants(g: nx.MultiDiGraph, taxonomy_id: str) -> list[str]:
    """A taxonomy node and every node below it (full IDs), in sorted order."""
    start = key("taxonomy", taxonomy_id)
    if start not in g:
        raise KeyError(start)
    out, stack = [], [start]
    while stack:
        n = stack.pop()
        out.append(g.nodes[n]["ref"])
        stack += [u for u, _, t in g.in_edges(n, data="type") if t == "child_of"]
    return sorted(out)


def methods_in_family(g: nx.MultiDiGraph, taxonomy_id: str) -> list[str]:
    """Method IDs in a family or any family below a family group."""
    return sorted({m for t in descendants(g, taxonomy_id) for m in _sources(g, key("taxonomy", t), "in_family", "method")})


def papers_in_family(g: nx.MultiDiGraph, taxonomy_id: str) -> list[str]:
    """Paper IDs tagged with the node or a node below it, or introducing a method in it."""
    found = set()
    for t in descendants(g, taxonomy_id):
        found.update(_sources(g, key("taxonomy", t), "tagged", "paper"))
    for mid in methods_in_family(g, taxonomy_id):
        found.update(_sources(g, key("method", mid), "introduces", "paper"))
    return sorted(found)


def family_tree(g: nx.MultiDiGraph, root: str = "mitigation") -> dict:
    """Nested ``{"id", "label", "methods", "children"}`` for a taxonomy subtree."""
    node = key("taxonomy", root)
    if node not in g:
        raise KeyError(node)
    children = sorted(g.nodes[u]["ref"] for u, _, t in g.in_edges(node, data="type") if t == "child_of")
    return {
        "id": root,
        "label": g.nodes[node]["label"],
        "methods": _sources(g, node, "in_family", "method"),
        "children": [family_tree(g, c) for c in children],
    }


def neighbours(g: nx.MultiDiGraph, node: str) -> list[tuple[str, str, str]]:
    """``(direction, edge type, node)`` for every edge touching ``node``, sorted."""
    if node not in g:
        raise KeyError(node)
    out = [("out", t, v) for _, v, t in g.out_edges(node, data="type")]
    out += [("in", t, u) for u, _, t in g.in_edges(node, data="type")]
    return sorted(set(out))


def resolve_node(g: nx.MultiDiGraph, name: str) -> Optional[str]:
    """Accept ``type:id`` or a bare id that is unique across types."""
    if name in g:
        return name
    matches = sorted(n for n in g if n.split(":", 1)[1] == name)
    return matches[0] if len(matches) == 1 else None


# ---------------------------------------------------------------- export


def export_graphml(g: nx.MultiDiGraph, path: Path) -> None:
    nx.write_graphml(g, path)


def node_link(g: nx.MultiDiGraph) -> dict:
    """Deterministic node-link JSON data (sorted nodes and edges)."""
    nodes = [dict(id=n, **{k: v for k, v in sorted(a.items())}) for n, a in sorted(g.nodes(data=True))]
    links = sorted(
        ({"source": u, "target": v, "type": t} for u, v, t in g.edges(data="type")),
        key=lambda e: (e["source"], e["target"], e["type"]),
    )
    return {"directed": True, "multigraph": True, "nodes": nodes, "links": links}


def export_node_link(g: nx.MultiDiGraph, path: Path) -> None:
    path.write_text(json.dumps(node_link(g), indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def counts_by_type(g: nx.MultiDiGraph, items: Iterable[str] = NODE_TYPES) -> dict[str, int]:
    return {t: sum(1 for _, a in g.nodes(data=True) if a["type"] == t) for t in items}
