"""Identity of code: what a result depends on, as hashes of normalised syntax trees.

A result must be re-run when the code that decides it changes, and only then. Hashing file bytes
gets both halves wrong: a docstring edit re-runs everything, and code reached through an import
nobody listed is missed. Here a module's identity is the SHA-256 of its **normalised syntax
tree** (:func:`normalised_tree`: docstrings, bare string statements, comments and formatting
dropped), and the identity of a piece of code is that of every project module in its **import
closure** (:func:`import_closure`), found by reading the ``import`` statements of each module —
at the top, inside functions, anywhere except under ``if TYPE_CHECKING:`` — never from a hand
list. Importing a module also runs its packages' ``__init__`` modules, so those count too.

Sources are read under :data:`REPO_ROOT` (``root=`` reads another copy of the tree: tests edit a
copy and compare). Only modules of the project's packages (:data:`PROJECT_PACKAGES`) are followed; third-party code
is identified by the package versions in a record's provenance instead.

Nothing is imported to compute an identity: sources are parsed, which keeps planning a run free
of torch. Each module is parsed once per process, and a stat-keyed cache on disk
(``<cache>/code-identity.json``: path, size, mtime → tree hash and imports) spares re-parsing
unchanged files in the next process.

>>> sorted(import_closure(["plugins.config"]))
['plugins', 'plugins.config']
>>> len(code_hash(["plugins.config"]))
64
"""
from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from plugins.files import StatCache, stat_key

__all__ = ["PROJECT_PACKAGES", "REPO_ROOT", "normalised_tree", "module_source", "module_info", "import_closure",
           "code_identity", "code_hash", "IdentityError"]

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("plugins",)
"""Top-level packages whose modules count in a code identity (the experiment side)."""
_CACHE_VERSION = 1


class IdentityError(ValueError):
    """A module named in an identity has no source file, or its source does not parse."""


# ---------------------------------------------------------------- one module

def _is_docstring(statement: ast.stmt) -> bool:
    return (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str))



def _canonical(node: Any) -> Any:
    """A JSON-ready form of an AST that leaves out positions and empty or unset fields.

    Empty and unset fields are left out so that a field a newer Python adds with an empty default
    (``type_params`` in 3.12) does not change the identity of unchanged code.
    """
    if isinstance(node, ast.AST):
        fields = {}
        for name in node._fields:
            value = getattr(node, name, None)
            if value is None or value == []:
                continue
            fields[name] = _canonical(value)
        return [type(node).__name__, fields]
    if isinstance(node, list):
        return [_canonical(v) for v in node]
    if isinstance(node, (bytes, complex)):
        return repr(node)
    if isinstance(node, float) and node != node:  # NaN literal
        return "nan"
    if node is Ellipsis:
        return "..."
    return node


def normalised_tree(source: str, filename: str = "<source>") -> str:
    """The syntax tree of ``source`` as canonical text, without docstrings, comments or layout.

    >>> a = normalised_tree('def f(x):\\n    \"\"\"Doc.\"\"\"\\n    return x + 1  # why\\n')
    >>> b = normalised_tree('def f(x):\\n\\n    return (x +\\n            1)\\n')
    >>> a == b, a == normalised_tree('def f(x):\\n    return x + 2\\n')
    (True, False)
    """
    tree = ast.parse(source, filename=filename)
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            statements = getattr(node, field, None)
            if isinstance(statements, list) and statements and isinstance(statements[0], ast.stmt):
                kept = [s for s in statements if not _is_docstring(s)]
                # A body cannot be empty (a lone docstring acts as ``pass``); an else-branch can.
                setattr(node, field, kept or ([ast.Pass()] if field == "body" else []))
    return json.dumps(_canonical(tree), separators=(",", ":"), ensure_ascii=False)


def module_source(name: str, root: Optional[Path] = None) -> Optional[Path]:
    """The source file of project module ``name`` (``a/b.py`` or ``a/b/__init__.py``), or None if there is none."""
    parts = name.split(".")
    base = Path(root or REPO_ROOT).joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(tree: ast.Module, module: str, is_package: bool) -> list[str]:
    """Every module name an ``import`` statement of ``tree`` may load (candidates: not all exist).

    ``from a import b`` may load ``a.b`` (a submodule) or only take a name from ``a``; both are
    listed and the caller keeps those that are project modules.
    """
    found: list[str] = []
    package = module if is_package else module.rpartition(".")[0]

    def visit(nodes: Iterable[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.orelse)  # imports only a type checker sees do not run
                continue
            if isinstance(node, ast.Import):
                found.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                found.append(base)
                found.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
            visit(ast.iter_child_nodes(node))

    visit(tree.body)
    return found


_PARSED = StatCache("code-identity.json", version=_CACHE_VERSION)
"""Tree hash and imports of each module file, by path, while the file's status holds."""


def module_info(name: str, root: Optional[Path] = None) -> tuple[str, tuple[str, ...]]:
    """(normalised-tree SHA-256, candidate imported module names) of project module ``name``."""
    path = module_source(name, root)
    if path is None:
        raise IdentityError(f"module {name!r} has no source file under {root or REPO_ROOT} (expected "
                            f"{'/'.join(name.split('.'))}.py or .../__init__.py); cannot identify its code")
    key, status = str(path), stat_key(path)
    known = _PARSED.get(key, status)
    if known is not None:
        return known["hash"], tuple(known["imports"])
    text = path.read_text(encoding="utf-8")
    try:
        tree_text = normalised_tree(text, str(path))
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise IdentityError(f"{path}:{exc.lineno}: syntax error ({exc.msg}); cannot identify module {name!r}") from None
    digest = hashlib.sha256(tree_text.encode("utf-8")).hexdigest()
    imports = tuple(sorted(set(_imported_names(tree, name, path.name == "__init__.py"))))
    if status is not None and stat_key(path) == status:  # unchanged while it was read
        _PARSED.put(key, status, {"hash": digest, "imports": list(imports)})
    return digest, imports


# ---------------------------------------------------------------- closures

def _is_project(name: str) -> bool:
    return name.split(".")[0] in PROJECT_PACKAGES


def _with_packages(name: str) -> list[str]:
    """``a.b.c`` → ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages' ``__init__`` first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def import_closure(roots: Sequence[str], root: Optional[Path] = None) -> dict[str, str]:
    """Every project module ``roots`` load, directly or not, with its normalised-tree hash.

    Candidate names that are not project modules with a source file (third-party packages, a
    name imported *from* a module rather than a submodule) are skipped.
    """
    todo = [m for r in roots for m in _with_packages(r)]
    seen: dict[str, str] = {}
    while todo:
        name = todo.pop()
        if name in seen or not _is_project(name):
            continue
        if module_source(name, root) is None:
            if name in roots:
                raise IdentityError(f"module {name!r} has no source file under {root or REPO_ROOT}; cannot identify "
                                    "its code")
            continue
        digest, imports = module_info(name, root)
        seen[name] = digest
        for candidate in imports:
            for step in _with_packages(candidate):
                if step not in seen and _is_project(step):
                    todo.append(step)
    _PARSED.save()
    return dict(sorted(seen.items()))


def code_identity(roots: Sequence[str], root: Optional[Path] = None) -> dict[str, str]:
    """The import closure of ``roots`` (module → tree hash), sorted by module name."""
    return import_closure(sorted(set(roots)), root)


def code_hash(roots: Sequence[str], root: Optional[Path] = None) -> str:
    """One SHA-256 over :func:`code_identity`: the identity of the code ``roots`` run."""
    items = code_identity(roots, root)
    text = "".join(f"{name}\t{digest}\n" for name, digest in items.items())
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
