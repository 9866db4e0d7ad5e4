"""Registries of methods, benchmarks and models, by name, in the style of timm's ``@register_model``.

A plugin registers itself with a decorator whose argument is a string literal::

    from plugins.registry import register_method

    @register_method("vcd")
    class VCD(Method):
        \"\"\"Visual contrastive decoding (Leng et al., CVPR 2024).\"\"\"

and is found again by name: ``get_method("vcd")``, ``list_methods("v*")``, ``describe("methods")``.

**Lazy by construction.** Importing this module imports neither torch nor any plugin. The first
query scans the plugin packages (``plugins/methods``, ``plugins/benchmarks``, ``plugins/models``,
found with :func:`pkgutil.iter_modules`) *statically*: each module's source is parsed with
:mod:`ast`, and every top-level class or function decorated with ``@register_method("...")`` /
``@register_benchmark("...")`` / ``@register_model("...")`` goes into a table of name → module,
qualname, first docstring line. Listing and describing read only that table, so ``alignscope list
methods`` stays fast and torch-free however heavy the plugins are. :func:`get_method` and friends
import the one module that defines the name, whose decorator then registers the real object.
Plugins defined elsewhere (a user's script, a test) register at import time like in timm and are
listed beside the scanned ones.

**Errors locate themselves.** A name defined twice names both definitions (``module:qualname``
and ``file:line``); an unknown name suggests the closest ones ("did you mean") and lists what
exists; a decorator whose name is not a string literal is reported with its file and line.

>>> "baseline" in list_methods()
True
>>> list_methods("base*")
['baseline']
>>> get_method("baselin")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
plugins.registry.UnknownNameError: unknown method 'baselin'; did you mean 'baseline'? Available methods: ...baseline...
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import fnmatch
import importlib
import inspect
import pkgutil
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

__all__ = [
    "KINDS", "RegistryError", "UnknownNameError", "DuplicateNameError", "Entry",
    "register_method", "register_benchmark", "register_model",
    "get_method", "get_benchmark", "get_model", "create_method",
    "list_methods", "list_benchmarks", "list_models", "describe", "entries", "verify",
]

T = TypeVar("T")

KINDS = ("methods", "benchmarks", "models")
"""The registries, by plural name as the CLI spells them (``alignscope list methods``)."""

_SINGULAR = {"methods": "method", "benchmarks": "benchmark", "models": "model"}
_DECORATORS = {f"register_{singular}": kind for kind, singular in _SINGULAR.items()}
_PACKAGES = {kind: f"plugins.{kind}" for kind in KINDS}
"""Where the built-in plugins live; every module in these packages is scanned (not imported)."""
_PLUGINS_DIR = Path(__file__).resolve().parent
_NAME = re.compile(r"^[a-z0-9][a-z0-9.+_-]*$")  # the same rule as plugins.api.Name: names go into result records
_NAME_MAX = 80


class RegistryError(ValueError):
    """A registry problem; the message says where (``module:qualname``, ``file:line``) and what to do."""


class UnknownNameError(RegistryError, KeyError):
    """A name nobody registered. ``suggestions`` holds the close matches, ``available`` every name."""

    def __init__(self, kind: str, name: str, available: list[str]):
        self.kind, self.name, self.available = kind, name, available
        self.suggestions = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else "."
        listing = ", ".join(available) if available else "(none registered)"
        super().__init__(f"unknown {_SINGULAR[kind]} {name!r}{hint} Available {kind}: {listing}")

    __str__ = ValueError.__str__  # KeyError would repr() the message


class DuplicateNameError(RegistryError):
    """Two definitions claim one name."""


@dataclass(frozen=True)
class Entry:
    """One registered name and where it is defined."""

    kind: str  # methods, benchmarks or models
    name: str  # the registered name, e.g. "vcd"
    module: str  # dotted module, e.g. "plugins.methods.vcd"
    qualname: str  # the decorated class or function inside the module, e.g. "VCD"
    summary: str  # first line of its docstring ("" if none)
    file: Optional[str] = None  # source file, when known
    line: Optional[int] = None  # line of the registering decorator, when known
    oracle: Optional[str] = None  # a method class's ``oracle = "..."``: why its stand-in sees the world's ground truth

    @property
    def where(self) -> str:
        """``module:qualname (file:line)``, how errors name a definition."""
        place = f" ({self.file}:{self.line})" if self.file and self.line else ""
        return f"{self.module}:{self.qualname}{place}"


class _Registry:
    """One kind's table: entries found by the static scan, plus objects registered at import time."""

    def __init__(self, kind: str):
        self.kind = kind
        self.objects: dict[str, Any] = {}  # name -> the registered class or function (after import)
        self.runtime: dict[str, Entry] = {}  # name -> where that object is defined

    def register(self, name: str, obj: Any) -> None:
        entry = _entry_of(self.kind, name, obj)
        previous = self.runtime.get(name)
        # The same definition again (a module imported twice, importlib.reload) replaces itself.
        if previous is not None and (previous.module, previous.qualname) != (entry.module, entry.qualname):
            raise DuplicateNameError(
                f"{_SINGULAR[self.kind]} name {name!r} is registered twice: by {_located(previous, self.objects[name])} "
                f"and by {_located(entry, obj)}; rename one of them")
        scanned = _static_index().get(self.kind, {}).get(name)
        if scanned is not None and (scanned.module, scanned.qualname) != (entry.module, entry.qualname):
            raise DuplicateNameError(
                f"{_SINGULAR[self.kind]} name {name!r} is registered by {_located(entry, obj)} but already defined "
                f"by {scanned.where}; rename one of them")
        if scanned is not None:  # a class has no line of its own at run time; the scan knows it
            entry = dataclasses.replace(entry, file=scanned.file, line=scanned.line)
        self.runtime[name] = entry
        self.objects[name] = obj

    def all_entries(self) -> dict[str, Entry]:
        merged = dict(_static_index().get(self.kind, {}))
        merged.update(self.runtime)  # a scanned entry, once imported, carries its real docstring
        return merged

    def names(self, pattern: str = "*") -> list[str]:
        if not isinstance(pattern, str):
            raise TypeError(f"pattern is a {type(pattern).__name__}, expected an fnmatch pattern such as 'v*'")
        return sorted(n for n in self.all_entries() if fnmatch.fnmatchcase(n, pattern))

    def get(self, name: str) -> Any:
        if name in self.objects:
            return self.objects[name]
        entry = self.all_entries().get(name)
        if entry is None:
            raise UnknownNameError(self.kind, name, self.names())
        importlib.import_module(entry.module)  # runs the decorator, which fills self.objects
        if name not in self.objects:
            raise RegistryError(
                f"{_SINGULAR[self.kind]} {name!r}: {entry.where} has @register_{_SINGULAR[self.kind]}({name!r}) "
                f"in its source but importing {entry.module} did not register it; is the decorator applied at module level?")
        return self.objects[name]


_REGISTRIES = {kind: _Registry(kind) for kind in KINDS}


def _check_name(kind: str, name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > _NAME_MAX:
        raise RegistryError(
            f"{where}: {_SINGULAR[kind]} name {name!r} is not valid, expected lower-case letters, digits and "
            f"'.+_-' (at most {_NAME_MAX} characters, starting with a letter or digit), e.g. 'vcd' or 'llava-1.5-7b'")
    return name


def _summary(doc: Optional[str]) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def _entry_of(kind: str, name: str, obj: Any) -> Entry:
    module = getattr(obj, "__module__", None) or "?"
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    code = getattr(obj, "__code__", None)
    file = getattr(sys.modules.get(module), "__file__", None)
    line = code.co_firstlineno if code is not None else None
    oracle = getattr(obj, "oracle", None)
    return Entry(kind, name, module, qualname, _summary(getattr(obj, "__doc__", None)), file, line,
                 oracle if isinstance(oracle, str) else None)


def _located(entry: Entry, obj: Any) -> str:
    """``entry.where``, finding the source line of a class when needed (error paths only: it reads the file)."""
    if entry.line is None:
        try:
            file, line = inspect.getsourcefile(obj), inspect.getsourcelines(obj)[1]
        except (OSError, TypeError):
            return entry.where
        entry = dataclasses.replace(entry, file=file, line=line)
    return entry.where


def _make_decorator(kind: str) -> Callable[[str], Callable[[T], T]]:
    singular = _SINGULAR[kind]

    def register(name: str) -> Callable[[T], T]:
        if callable(name) and not isinstance(name, str):  # used bare: @register_method
            raise RegistryError(
                f"@register_{singular} on {getattr(name, '__qualname__', name)!r} needs a name: "
                f"write @register_{singular}(\"some-name\")")
        _check_name(kind, name, f"@register_{singular}")

        def decorator(obj: T) -> T:
            if kind == "methods":
                _check_method_class(name, obj)
                obj.name = name  # type: ignore[attr-defined]  # the class knows its registered name
            elif not callable(obj):
                raise RegistryError(f"@register_{singular}({name!r}) decorates {obj!r}, expected a class or a function")
            _REGISTRIES[kind].register(name, obj)
            return obj

        return decorator

    register.__name__ = register.__qualname__ = f"register_{singular}"
    register.__doc__ = (
        f"Class or function decorator: register it as the {singular} ``name`` "
        f"(lower-case, digits, '.+_-'). Raises :class:`DuplicateNameError` if the name is taken.")
    return register


def _check_method_class(name: str, obj: Any) -> None:
    from plugins.methods.base import Method  # light: pydantic only

    if not (isinstance(obj, type) and issubclass(obj, Method)):
        raise RegistryError(
            f"@register_method({name!r}) decorates {getattr(obj, '__qualname__', obj)!r}, expected a subclass of "
            "plugins.methods.base.Method")


register_method = _make_decorator("methods")
register_benchmark = _make_decorator("benchmarks")
register_model = _make_decorator("models")


# ---------------------------------------------------------------- the static scan

_INDEX: Optional[dict[str, dict[str, Entry]]] = None


def _static_index() -> dict[str, dict[str, Entry]]:
    """kind -> name -> Entry for every decorated definition in the plugin packages (parsed once)."""
    global _INDEX
    if _INDEX is None:
        _INDEX = _scan_packages()
    return _INDEX


def _plugin_modules(kind: str) -> list[tuple[str, Path]]:
    """(dotted name, source file) of every module in one plugin package, sorted; private ones too."""
    package_dir = _PLUGINS_DIR / kind
    found = []
    for info in pkgutil.iter_modules([str(package_dir)]):
        source = package_dir / info.name / "__init__.py" if info.ispkg else package_dir / f"{info.name}.py"
        if source.is_file():  # skip compiled-only modules
            found.append((f"{_PACKAGES[kind]}.{info.name}", source))
    return sorted(found)


def _scan_packages() -> dict[str, dict[str, Entry]]:
    index: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
    problems: list[str] = []
    for package_kind in KINDS:
        for module, source in _plugin_modules(package_kind):
            for entry in _scan_source(module, source, problems):
                previous = index[entry.kind].get(entry.name)
                if previous is not None:
                    problems.append(
                        f"{_SINGULAR[entry.kind]} name {entry.name!r} is defined twice: by {previous.where} "
                        f"and by {entry.where}; rename one of them")
                    continue
                index[entry.kind][entry.name] = entry
    if problems:
        error = DuplicateNameError if all("defined twice" in p for p in problems) else RegistryError
        raise error(f"{len(problems)} problem(s) in the plugin registry:\n" + "\n".join(f"  {p}" for p in problems))
    return index


def _scan_source(module: str, source: Path, problems: list[str]) -> list[Entry]:
    """Registered definitions at the top level of one module, found without importing it."""
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{source}: cannot read ({exc}), expected a Python source file")
        return []
    except SyntaxError as exc:
        problems.append(f"{source}:{exc.lineno}: syntax error ({exc.msg}), expected a valid plugin module")
        return []
    found = []
    for node in tree.body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for decorator in node.decorator_list:
            kind = _decorator_kind(decorator)
            if kind is None:
                continue
            where = f"{source}:{decorator.lineno}"
            singular = _SINGULAR[kind]
            args = decorator.args if isinstance(decorator, ast.Call) else []
            if not isinstance(decorator, ast.Call) or len(args) != 1 or decorator.keywords \
                    or not isinstance(args[0], ast.Constant) or not isinstance(args[0].value, str):
                problems.append(
                    f"{where}: @register_{singular} on {node.name} needs one string literal, "
                    f"expected e.g. @register_{singular}(\"{node.name.lower()}\") so the name is known without importing")
                continue
            try:
                name = _check_name(kind, args[0].value, where)
            except RegistryError as exc:
                problems.append(str(exc))
                continue
            found.append(Entry(kind, name, module, node.name, _summary(ast.get_docstring(node)),
                               str(source), decorator.lineno, _class_string(node, "oracle")))
    return found


def _class_string(node: ast.AST, attribute: str) -> Optional[str]:
    """The string literal a class body assigns to ``attribute`` (``oracle = "..."``), or None."""
    for statement in getattr(node, "body", []) if isinstance(node, ast.ClassDef) else []:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 \
                and isinstance(statement.targets[0], ast.Name) and statement.targets[0].id == attribute \
                and isinstance(statement.value, ast.Constant) and isinstance(statement.value.value, str):
            return statement.value.value
    return None


def _decorator_kind(node: ast.expr) -> Optional[str]:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Name):
        return _DECORATORS.get(target.id)
    if isinstance(target, ast.Attribute):
        return _DECORATORS.get(target.attr)
    return None


# ---------------------------------------------------------------- queries

def _registry(kind: str) -> _Registry:
    if kind not in _REGISTRIES:
        close = difflib.get_close_matches(kind, list(KINDS) + list(_SINGULAR.values()), n=1)
        hint = f"; did you mean {_plural(close[0])!r}?" if close else "."
        raise RegistryError(f"unknown registry {kind!r}{hint} Expected one of: {', '.join(KINDS)}")
    return _REGISTRIES[kind]


def _plural(word: str) -> str:
    return word if word in KINDS else f"{word}s"


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching an fnmatch ``pattern`` (case-sensitive), sorted."""
    return _registry("methods").names(pattern)


def list_benchmarks(pattern: str = "*") -> list[str]:
    """Registered benchmark names matching an fnmatch ``pattern``, sorted."""
    return _registry("benchmarks").names(pattern)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching an fnmatch ``pattern``, sorted."""
    return _registry("models").names(pattern)


def get_method(name: str) -> type:
    """The :class:`~plugins.methods.base.Method` subclass registered as ``name`` (imports its module)."""
    return _registry("methods").get(name)


def get_benchmark(name: str) -> Any:
    """The benchmark class or factory registered as ``name`` (imports its module)."""
    return _registry("benchmarks").get(name)


def get_model(name: str) -> Callable[..., Any]:
    """The model factory registered as ``name`` (imports its module); call it to load the model."""
    return _registry("models").get(name)


def create_method(name: str, config: Any = None) -> Any:
    """An instance of the method ``name`` with ``config`` (None: the official defaults; or a dict)."""
    return get_method(name)(config)


def entries(kind: str) -> list[Entry]:
    """Every entry of one registry (``methods``, ``benchmarks`` or ``models``), sorted by name."""
    table = _registry(kind).all_entries()
    return [table[name] for name in sorted(table)]


def describe(kind: str) -> list[tuple[str, str]]:
    """(name, one-line summary) for every entry of ``kind``, sorted; what ``alignscope list`` prints.

    The summary is the first line of the plugin's docstring. Nothing is imported for this.
    """
    return [(e.name, e.summary) for e in entries(kind)]


def verify() -> list[str]:
    """Import every plugin module and check the static scan agrees with what registered itself.

    Returns one message per disagreement (empty when all is well); the test suite asserts that.
    """
    problems = []
    for kind in KINDS:
        for name, scanned in sorted(_static_index()[kind].items()):
            try:
                _REGISTRIES[kind].get(name)
            except Exception as exc:  # noqa: BLE001 - every problem is reported, not just the first
                problems.append(f"{scanned.where}: importing {_SINGULAR[kind]} {name!r} failed: {type(exc).__name__}: {exc}")
                continue
            real = _REGISTRIES[kind].runtime[name]
            if (real.module, real.qualname) != (scanned.module, scanned.qualname):
                problems.append(f"{_SINGULAR[kind]} {name!r}: scanned at {scanned.where}, registered by {real.where}")
    for kind in KINDS:  # imported package modules registering names the scan did not see
        for name, real in sorted(_REGISTRIES[kind].runtime.items()):
            if real.module.startswith(_PACKAGES[kind] + ".") and name not in _static_index()[kind]:
                problems.append(
                    f"{_SINGULAR[kind]} {name!r}: registered by {real.where} but invisible to the static scan; "
                    f"decorate a top-level class or function with @register_{_SINGULAR[kind]}(\"{name}\")")
    return problems
