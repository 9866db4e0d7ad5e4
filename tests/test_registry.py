"""Registries (methods, benchmarks, models) and the method interface: naming, errors, laziness."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import Field, ValidationError

from plugins import registry
from plugins.api import BASELINE
from plugins.methods.base import Method, MethodConfig, MethodConfigError
from plugins.models.hooks import ForwardHooks
from plugins.registry import (DuplicateNameError, RegistryError, UnknownNameError, create_method, describe,
                              get_method, list_benchmarks, list_methods, list_models, register_method,
                              register_model)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_registry(monkeypatch):
    """Registrations made by a test are forgotten afterwards; the static scan is redone on demand."""
    for reg in registry._REGISTRIES.values():
        monkeypatch.setattr(reg, "objects", dict(reg.objects))
        monkeypatch.setattr(reg, "runtime", dict(reg.runtime))
    monkeypatch.setattr(registry, "_INDEX", registry._INDEX)
    yield registry


def write_plugins(root: Path, files: dict[str, str]) -> Path:
    """A throw-away plugins tree (methods/, benchmarks/, models/) holding ``files``."""
    for kind in registry.KINDS:
        (root / kind).mkdir(parents=True, exist_ok=True)
        (root / kind / "__init__.py").write_text("")
    for rel, text in files.items():
        (root / rel).write_text(textwrap.dedent(text))
    return root


# ---------------------------------------------------------------- laziness

def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_importing_and_listing_the_registry_imports_no_torch():
    out = run_python("""
        import sys
        import plugins.registry as r
        after_import = sorted(m for m in ("torch", "transformers", "numpy") if m in sys.modules)
        for kind in r.KINDS:
            r.describe(kind)
        r.list_methods(); r.list_models(); r.list_benchmarks()
        after_listing = sorted(m for m in ("torch", "transformers") if m in sys.modules)
        r.get_method("baseline")()  # the baseline itself needs no torch either
        after_baseline = sorted(m for m in ("torch", "transformers") if m in sys.modules)
        print(after_import, after_listing, after_baseline)
    """)
    assert out.split() == ["[]", "[]", "[]"]


def test_listing_models_does_not_import_the_model_module():
    out = run_python("""
        import sys
        import plugins.registry as r
        print(r.list_models("llava*"), "plugins.models.zoo" in sys.modules or "plugins.models.adapter" in sys.modules)
    """)
    assert "llava-1.5-7b" in out and out.strip().endswith("False")


# ---------------------------------------------------------------- listing and describing

def test_baseline_is_registered_under_the_result_record_name():
    assert BASELINE in list_methods()
    cls = get_method(BASELINE)
    assert cls.name == BASELINE and issubclass(cls, Method)
    assert create_method(BASELINE).name == BASELINE


def test_patterns_are_fnmatch_and_results_sorted(clean_registry):
    for name in ("zz-test-b", "zz-test-a", "zz-other"):
        register_method(name)(type(f"M_{name}", (Method,), {"__doc__": f"{name} summary."}))
    assert list_methods("zz-test-*") == ["zz-test-a", "zz-test-b"]
    assert list_methods("zz-?ther") == ["zz-other"]
    assert list_methods("ZZ*") == []  # case-sensitive, like the names
    assert list_methods() == sorted(list_methods())
    with pytest.raises(TypeError, match="fnmatch pattern"):
        list_methods(["v*"])


def test_describe_gives_first_docstring_line_for_each_kind(clean_registry):
    @register_model("zz-tiny")
    def zz_tiny():
        """A tiny test model.

        More text that is not part of the summary.
        """

    assert ("zz-tiny", "A tiny test model.") in describe("models")
    assert dict(describe("methods"))[BASELINE] == get_method(BASELINE).__doc__.strip().splitlines()[0]
    assert describe("benchmarks") == [(n, s) for n, s in describe("benchmarks")]  # may be empty for now
    for kind in registry.KINDS:
        names = [name for name, _ in describe(kind)]
        assert names == sorted(names)


def test_describe_of_an_unknown_kind_suggests_the_right_one():
    with pytest.raises(RegistryError, match=r"unknown registry 'method'; did you mean 'methods'\? Expected one of: methods, benchmarks, models"):
        describe("method")


def test_static_scan_sees_the_same_as_importing():
    assert registry.verify() == []


def test_registered_models_are_listed_from_source():
    assert "llava-1.5-7b" in list_models()
    entry = {e.name: e for e in registry.entries("models")}["llava-1.5-7b"]
    assert entry.module == "plugins.models.zoo" and entry.summary


# ---------------------------------------------------------------- errors

def test_unknown_name_suggests_and_lists():
    with pytest.raises(UnknownNameError) as info:
        get_method("baselin")
    message = str(info.value)
    assert "unknown method 'baselin'; did you mean 'baseline'?" in message
    assert "Available methods:" in message and "baseline" in message.split("Available methods:")[1]
    assert info.value.suggestions == ["baseline"]
    assert isinstance(info.value, KeyError)  # `except KeyError` works too
    with pytest.raises(UnknownNameError, match="unknown model 'no-such-model'"):
        registry.get_model("no-such-model")
    with pytest.raises(UnknownNameError, match=r"unknown benchmark 'x'\. Available benchmarks: "):
        registry.get_benchmark("x")


def test_duplicate_runtime_registration_names_both_definitions(clean_registry):
    class First(Method):
        """First."""

    class Second(Method):
        """Second."""

    register_method("zz-dup")(First)
    with pytest.raises(DuplicateNameError) as info:
        register_method("zz-dup")(Second)
    message = str(info.value)
    here = f"{__name__}:test_duplicate_runtime_registration_names_both_definitions.<locals>"
    assert f"{here}.First ({__file__}:" in message and f"{here}.Second ({__file__}:" in message
    register_method("zz-dup")(First)  # the same definition again (a re-import) is fine
    assert get_method("zz-dup") is First


def test_registering_a_scanned_name_elsewhere_is_a_duplicate(clean_registry):
    class Impostor(Method):
        """Not the real baseline."""

    with pytest.raises(DuplicateNameError, match=r"plugins\.methods\.baseline:Baseline .*baseline\.py:\d+"):
        register_method(BASELINE)(Impostor)


def test_duplicate_in_plugin_sources_names_both_files(clean_registry, tmp_path, monkeypatch):
    root = write_plugins(tmp_path / "plugins", {
        "methods/one.py": """
            from plugins.registry import register_method
            @register_method("same")
            class One:
                '''One.'''
        """,
        "methods/two.py": """
            from plugins import registry
            @registry.register_method("same")
            class Two:
                '''Two.'''
        """,
    })
    monkeypatch.setattr(registry, "_PLUGINS_DIR", root)
    monkeypatch.setattr(registry, "_INDEX", None)
    with pytest.raises(DuplicateNameError) as info:
        list_methods()
    message = str(info.value)
    assert "plugins.methods.one:One" in message and "plugins.methods.two:Two" in message
    assert f"{root / 'methods' / 'one.py'}:3" in message and f"{root / 'methods' / 'two.py'}:3" in message


def test_non_literal_or_bad_names_in_sources_are_located(clean_registry, tmp_path, monkeypatch):
    root = write_plugins(tmp_path / "plugins", {
        "methods/dynamic.py": """
            from plugins.registry import register_method
            NAME = "x"
            @register_method(NAME)
            class Dynamic:
                pass

            @register_method("Bad Name")
            class Bad:
                pass
        """,
        "models/broken.py": "def oops(:\n",
    })
    monkeypatch.setattr(registry, "_PLUGINS_DIR", root)
    monkeypatch.setattr(registry, "_INDEX", None)
    with pytest.raises(RegistryError) as info:
        list_models()
    message = str(info.value)
    assert "3 problem(s)" in message
    assert f"{root / 'methods' / 'dynamic.py'}:4: @register_method on Dynamic needs one string literal" in message
    assert f"{root / 'methods' / 'dynamic.py'}:8: method name 'Bad Name' is not valid" in message
    assert f"{root / 'models' / 'broken.py'}:1: syntax error" in message


def test_decorator_misuse_is_explained(clean_registry):
    with pytest.raises(RegistryError, match=r'needs a name: write @register_method\("some-name"\)'):
        @register_method
        class NoName(Method):
            pass
    with pytest.raises(RegistryError, match="expected a subclass of plugins.methods.base.Method"):
        register_method("zz-not-a-method")(object)
    with pytest.raises(RegistryError, match="method name 'VCD' is not valid"):
        register_method("VCD")
    with pytest.raises(RegistryError, match="expected a class or a function"):
        register_model("zz-not-callable")(42)


# ---------------------------------------------------------------- the method interface

class Scaled(Method):
    """A test method with hyper-parameters."""

    class Config(MethodConfig):
        alpha: float = Field(1.0, ge=0)  # weight
        beta: float = 0.1  # cutoff


def test_method_config_defaults_overrides_and_frozen():
    method = Scaled()
    assert (method.config.alpha, method.config.beta) == (1.0, 0.1)
    assert Scaled({"alpha": 2}).config.alpha == 2.0
    assert Scaled(Scaled.Config(beta=0.2)).config.beta == 0.2
    with pytest.raises(ValidationError, match="frozen"):
        method.config.alpha = 3.0
    assert repr(Scaled()) == "Scaled(alpha=1.0, beta=0.1)"


def test_method_config_errors_locate_themselves():
    with pytest.raises(MethodConfigError, match=r"^Scaled config: unknown key 'alpah'; did you mean 'alpha'\? allowed: alpha, beta$"):
        Scaled({"alpah": 2})
    with pytest.raises(MethodConfigError, match=r"Scaled config alpha: Input should be greater than or equal to 0"):
        Scaled({"alpha": -1})
    with pytest.raises(MethodConfigError, match=r"^Scaled config: got a Baseline.Config, expected Scaled.Config \(or a dict of its keys\)$"):
        Scaled(get_method(BASELINE).Config())
    with pytest.raises(MethodConfigError, match="expected a dict of hyper-parameters or None"):
        Scaled(["alpha", 1])
    with pytest.raises(MethodConfigError, match=r"baseline config: unknown key 'alpha'; allowed: none"):
        create_method(BASELINE, {"alpha": 1})


def test_method_config_must_stay_frozen_and_strict():
    from pydantic import ConfigDict

    with pytest.raises(TypeError, match="must stay frozen=True and extra='forbid'"):
        class Loose(Method):
            class Config(MethodConfig):
                model_config = ConfigDict(frozen=False, extra="forbid")
    with pytest.raises(TypeError, match="expected a subclass of plugins.methods.base.MethodConfig"):
        class Plain(Method):
            Config = dict


def test_fingerprint_payload_is_json_and_tracks_config_and_class():
    """A method's payload names it and its resolved config; its code is the runner's to identify (test_identity)."""
    a, b = Scaled().fingerprint_payload(), Scaled({"alpha": 2}).fingerprint_payload()
    json.dumps(a, sort_keys=True)
    assert a["config"] == {"alpha": 1.0, "beta": 0.1} and b["config"]["alpha"] == 2.0
    assert a["class"] == f"{__name__}:Scaled" and set(a) == {"method", "class", "config"}
    baseline = create_method(BASELINE).fingerprint_payload()
    assert baseline["method"] == BASELINE and baseline["class"] == "plugins.methods.baseline:Baseline"


def test_forward_hooks_are_removed_even_when_the_block_raises():
    torch = pytest.importorskip("torch")
    layer = torch.nn.Linear(2, 2)
    hooks = ForwardHooks().add(layer, lambda m, args, out: out).add(layer, lambda m, args: None, pre=True)
    with pytest.raises(RuntimeError, match="boom"):
        with hooks:
            assert len(layer._forward_hooks) == 1 and len(layer._forward_pre_hooks) == 1
            raise RuntimeError("boom")
    assert not layer._forward_hooks and not layer._forward_pre_hooks
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):
        ForwardHooks().add(object(), print)


@pytest.mark.parametrize("name", list_methods())
def test_every_registered_method_builds_with_defaults(name):
    """Registry-wide smoke test (timm style): every method instantiates and fingerprints with its defaults."""
    method = create_method(name)
    assert method.name == name and type(method).__doc__, f"{name}: needs a docstring (house rule 1)"
    payload = method.fingerprint_payload()
    assert json.loads(json.dumps(payload, sort_keys=True)) == payload
    assert payload == create_method(name).fingerprint_payload()
