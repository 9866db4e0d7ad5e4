"""The typed graph: integrity, queries, exports."""
from __future__ import annotations

import json

import networkx as nx
import pytest
from typer.testing import CliRunner

from alignscope.cli import app
from site_gen.graph import (
    DanglingReference, benchmarks_for_level, build_graph, descendants, family_tree, methods_for_level,
    methods_in_family, neighbours, node_link, papers_in_family, resolve_node,
)
from site_gen.load import load_knowledge_base


@pytest.fixture
def graph(mini_kb):
    kb, issues = load_knowledge_base(mini_kb)
    assert issues == []
    return build_graph(kb)


def test_typed_nodes_and_edges(graph):
    assert graph.nodes["method:vcd"]["type"] == "method"
    edges = {(u, v, t) for u, v, t in graph.edges(data="type")}
    assert ("paper:leng2024-vcd", "method:vcd", "introduces") in edges
    assert ("paper:leng2024-vcd", "paper:li2023-pope", "cites") in edges
    assert ("method:vcd", "taxonomy:mitigation/parameter-frozen/decoding", "in_family") in edges
    assert ("method:vcd", "taxonomy:level/object", "targets_level") in edges
    assert ("method:vcd", "taxonomy:cause/model/ability-gap", "addresses_cause") in edges
    assert ("benchmark:pope", "taxonomy:level/object", "targets_level") in edges
    assert ("taxonomy:level/object", "taxonomy:level", "child_of") in edges
    assert ("taxonomy:level/object", "paper:leng2024-vcd", "supported_by") in edges
    assert ("result:li2023-pope#1", "method:vcd", "measures") in edges
    assert ("result:li2023-pope#0", "benchmark:pope", "evaluated_on") in edges
    assert not any(v == "method:vcd" and t == "measures" for u, v, t in edges if u == "result:li2023-pope#0")


def test_queries(graph):
    assert methods_for_level(graph, "object") == ["vcd"]
    assert methods_for_level(graph, "relation") == []
    assert benchmarks_for_level(graph, "object") == ["pope"]
    assert benchmarks_for_level(graph, "attribute") == []
    assert descendants(graph, "mitigation") == ["mitigation", "mitigation/parameter-frozen", "mitigation/parameter-frozen/decoding"]
    assert methods_in_family(graph, "mitigation") == ["vcd"]
    assert papers_in_family(graph, "mitigation/parameter-frozen") == ["leng2024-vcd"]
    tree = family_tree(graph)
    assert tree["children"][0]["children"][0] == {"id": "mitigation/parameter-frozen/decoding", "label": "Decoding-based", "methods": ["vcd"], "children": []}
    assert ("in", "introduces", "paper:leng2024-vcd") in neighbours(graph, "method:vcd")
    assert resolve_node(graph, "vcd") == "method:vcd" and resolve_node(graph, "nothing") is None
    with pytest.raises(KeyError):
        methods_for_level(graph, "scene")


def test_dangling_reference_is_rejected(mini_kb):
    kb, _ = load_knowledge_base(mini_kb)
    bad = kb.papers["leng2024-vcd"].model_copy(update={"cites": ["ghost2020-x"]})
    kb.papers["leng2024-vcd"] = bad
    with pytest.raises(DanglingReference, match="paper:ghost2020-x does not exist"):
        build_graph(kb)


def test_exports_round_trip(graph, tmp_path, mini_kb):
    result = CliRunner().invoke(app, ["graph", "export", "--graphml", str(tmp_path / "g.graphml"), "--json", str(tmp_path / "g.json"), "--root", str(mini_kb)])
    assert result.exit_code == 0, result.output
    back = nx.read_graphml(tmp_path / "g.graphml")
    assert back.number_of_nodes() == graph.number_of_nodes() and back.number_of_edges() == graph.number_of_edges()
    data = json.loads((tmp_path / "g.json").read_text())
    assert data == json.loads(json.dumps(node_link(graph)))
    assert {n["id"] for n in data["nodes"]} == set(graph.nodes)


def test_graph_cli(mini_kb):
    run = lambda *a: CliRunner().invoke(app, ["graph", *a, "--root", str(mini_kb)])  # noqa: E731
    assert run("methods", "object").output.split() == ["vcd"]
    assert run("benchmarks", "object").output.split() == ["pope"]
    assert "mitigation/parameter-frozen/decoding  (Decoding-based)  [vcd]" in run("tree").output
    assert run("papers", "mitigation").output.split() == ["leng2024-vcd"]
    assert "-> in_family" in run("neighbours", "vcd").output
    bad = run("methods", "scene")
    assert bad.exit_code == 2 and "object, attribute or relation" in bad.output
    missing = run("neighbours", "method:vcdd")
    assert missing.exit_code == 2 and "did you mean 'method:vcd'" in missing.output
    assert "node method" in run("stats").output
