"""The identity of results (plugins.identity, plugins.runner.fingerprint): edits of documentation change
nothing, edits of code change exactly the cells that run that code.

Each test copies ``plugins/`` to a temporary tree, edits the copy, and computes the code part of
every cell's fingerprint for the default matrix (the import closure of the cell's method module,
benchmark module and the adapter) from both trees. No model is loaded and nothing is imported
from the copy: identity is read from source.
"""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from plugins import identity
from plugins.identity import code_hash, code_identity, module_info, normalised_tree
from plugins.registry import entries, get_method
from plugins.runner.fingerprint import ADAPTER_MODULE
from plugins.runner.matrix import expand, load_matrix

REPO = identity.REPO_ROOT


@pytest.fixture(scope="module")
def cells():
    """(cell name, method plugin, method module, benchmark module) of every cell of the default matrix."""
    methods = {e.name: e.module for e in entries("methods")}
    benchmarks = {e.name: e.module for e in entries("benchmarks")}
    return [(c.name, c.plugin, methods[c.plugin], benchmarks[c.benchmark]) for c in expand(load_matrix())]


def tree_copy(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(REPO / "plugins", root / "plugins", ignore=shutil.ignore_patterns("__pycache__", "checkpoints"))
    return root


def cell_codes(cells, root: Path | None = None) -> dict[str, str]:
    memo: dict[tuple[str, str], str] = {}
    out = {}
    for name, _, method_module, bench_module in cells:
        key = (method_module, bench_module)
        if key not in memo:
            memo[key] = code_hash([method_module, bench_module, ADAPTER_MODULE], root)
        out[name] = memo[key]
    return out


def module_names(root: Path) -> list[str]:
    names = []
    for path in sorted((root / "plugins").rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        names.append(".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts))
    return names


def rewrite_docs(source: str) -> str:
    """Every docstring replaced by other text, a bare string added after the module docstring, comments added."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                spans.append(first)

    def offset(line: int, col: int) -> int:  # ast columns count UTF-8 bytes
        return sum(len(x) for x in lines[:line - 1]) + len(lines[line - 1].encode("utf-8")[:col].decode("utf-8"))

    for node in sorted(spans, key=lambda n: (n.lineno, n.col_offset), reverse=True):
        start, end = offset(node.lineno, node.col_offset), offset(node.end_lineno, node.end_col_offset)
        source = source[:start] + '"""Rewritten: the words changed, not the code."""' + source[end:]
        lines = source.splitlines(keepends=True)
    return "# a comment added at the top\n" + source + "\n# and one at the end\n"


def test_normalised_tree_ignores_docstrings_comments_and_layout_only():
    base = 'class A:\n    """Doc."""\n    x: int = 1  # note\n\n    def f(self):\n        """More."""\n        return [1,\n  2]\n'
    same = 'class A:\n    x: int = 1\n    def f(self):\n        return [1, 2]\n'
    assert normalised_tree(base) == normalised_tree(same)
    for different in (same.replace("x: int = 1", "x: int = 2"), same.replace("[1, 2]", "[2, 1]"),
                      same.replace("x: int", "x: float"), same.replace("return", "yield")):
        assert normalised_tree(base) != normalised_tree(different)
    assert normalised_tree('x = "text"') != normalised_tree('x = "other"')  # strings that are values count


def test_imports_inside_functions_count_and_type_checking_ones_do_not(tmp_path):
    root = tmp_path / "tree"
    (root / "plugins" / "pkg").mkdir(parents=True)
    (root / "plugins" / "__init__.py").write_text("")
    (root / "plugins" / "pkg" / "__init__.py").write_text("")
    (root / "plugins" / "pkg" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from plugins.pkg import typing_only\n"
        "def f():\n    from . import lazy\n    from .lazy import value\n    import plugins.pkg.deep\n")
    for name in ("typing_only", "lazy", "deep"):
        (root / "plugins" / "pkg" / f"{name}.py").write_text("value = 1\n")
    assert sorted(code_identity(["plugins.pkg.a"], root)) == [
        "plugins", "plugins.pkg", "plugins.pkg.a", "plugins.pkg.deep", "plugins.pkg.lazy"]


def test_a_documentation_edit_in_every_module_changes_no_fingerprint(tmp_path, cells):
    root = tree_copy(tmp_path)
    names = module_names(root)
    before = {name: module_info(name, root)[0] for name in names}
    codes = cell_codes(cells, root)
    for name in names:
        path = identity.module_source(name, root)
        edited = rewrite_docs(path.read_text(encoding="utf-8"))
        assert edited != path.read_text(encoding="utf-8")
        path.write_text(edited, encoding="utf-8")
    assert {name: module_info(name, root)[0] for name in names} == before
    assert cell_codes(cells, root) == codes
    assert codes == cell_codes(cells)  # the copy is this checkout


def edit_code(root: Path, module: str, old: str, new: str) -> None:
    path = identity.module_source(module, root)
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} should occur once in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


# Methods whose own code parses yes/no answers with POPE's rule: their cells on any benchmark run the parser.
PARSER_USERS = {"logiccheck", "woodpecker", "dpo", "rdpo", "hacl", "lrv", "world-tune"}


def test_a_one_token_edit_of_the_pope_parser_changes_exactly_the_cells_it_scores(tmp_path, cells):
    root = tree_copy(tmp_path)
    before = cell_codes(cells, root)
    edit_code(root, "plugins.benchmarks.pope", 'answer.split(".", 1)', 'answer.split(".", 2)')
    after = cell_codes(cells, root)
    changed = {name for name in before if before[name] != after[name]}
    scored = {name for name, *_ in cells
              if name.split("/")[1] in ("world-pope", "world-attribute", "world-relation", "world-count", "world-diagnostics", "pope")}
    runs_parser = {name for name, plugin, *_ in cells if plugin in PARSER_USERS}
    assert scored <= changed  # the baseline's and every method's yes/no cells, the missing case
    assert changed <= scored | runs_parser
    baseline_captions = {n for n, plugin, *_ in cells if plugin in ("baseline", "vcd", "opera")
                         and n.split("/")[1] in ("world-caption", "world-representation")}
    assert baseline_captions and not baseline_captions & changed
    for plugin in PARSER_USERS & {p for _, p, *_ in cells}:  # they do run the parser
        assert "plugins.benchmarks.pope" in code_identity([get_method(plugin).__module__])


def test_an_edit_in_one_method_module_changes_only_the_cells_of_methods_built_on_it(tmp_path, cells):
    root = tree_copy(tmp_path)
    before = cell_codes(cells, root)
    plugins = sorted({plugin for _, plugin, *_ in cells})
    modules = sorted({get_method(p).__module__ for p in plugins})
    for module in modules:
        path = identity.module_source(module, root)
        original = path.read_text(encoding="utf-8")
        path.write_text(original + "\n_EDITED = 1\n", encoding="utf-8")
        changed = {name for name, code in cell_codes(cells, root).items() if code != before[name]}
        path.write_text(original, encoding="utf-8")
        # Built on it: the plugin's class, or one of its base classes, is defined in the edited module.
        built_on = {p for p in plugins if any(c.__module__ == module for c in get_method(p).__mro__)}
        assert changed == {name for name, plugin, *_ in cells if plugin in built_on}, module


def test_the_adapter_is_in_every_cell_and_a_docstring_edit_there_changes_nothing(tmp_path, cells):
    root = tree_copy(tmp_path)
    before = cell_codes(cells, root)
    for module in code_identity([ADAPTER_MODULE], root):
        path = identity.module_source(module, root)
        path.write_text(rewrite_docs(path.read_text(encoding="utf-8")), encoding="utf-8")
    assert cell_codes(cells, root) == before
    edit_code(root, ADAPTER_MODULE, "skip_special_tokens=True)]", "skip_special_tokens=True) if text]")
    assert all(code != before[name] for name, code in cell_codes(cells, root).items())
