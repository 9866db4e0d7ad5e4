"""The method interface: what a mitigation method may change, through public extension points only.

A method is a :class:`Method` subclass registered by name (``@register_method("vcd")``) with a
frozen pydantic ``Config`` whose defaults are the official ones. Around every call of
``model.generate`` the adapter (:class:`plugins.models.llava.LlavaAdapter`) applies the method's
four extension points, per chunk of the batch, in this order:

1. :meth:`Method.transform_inputs` — change the inputs (another prompt, a transformed image);
2. :meth:`Method.hooks` — a context manager holding forward (pre-)hooks, removed on exit;
3. :meth:`Method.logits_processors` — ``transformers`` ``LogitsProcessor`` objects
   (``__call__(input_ids, scores) -> scores``, never mutating their inputs) for decoding-time
   methods; a contrastive one runs its second forward pass inside its own processor, the way
   ``UnbatchedClassifierFreeGuidanceLogitsProcessor`` does;
4. :meth:`Method.postprocess` — correct the decoded texts (post-decoding methods).

Every default does nothing, so the unmitigated ``baseline`` is a subclass with no overrides.
Nothing patches ``generate``. Randomness is drawn per item (``batch.item_seed(i)``) or per image
(``batch.image_seed(i)``: items that show the same image share the draw), so that results do not
depend on the batch size.

>>> from pydantic import Field
>>> class Scaled(Method):
...     '''Example: a method with one hyper-parameter.'''
...     class Config(MethodConfig):
...         alpha: float = Field(1.0, ge=0)  # weight of the correction; the official default
>>> Scaled().config.alpha, Scaled({"alpha": 0.5}).config.alpha
(1.0, 0.5)
>>> Scaled({"alpah": 2})
Traceback (most recent call last):
...
plugins.methods.base.MethodConfigError: Scaled config: unknown key 'alpah'; did you mean 'alpha'? allowed: alpha
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import io
import json
import os
import sys
from pathlib import Path
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, Sequence

from pydantic import ValidationError

from plugins.config import StrictConfig

if TYPE_CHECKING:  # the adapter imports torch; this module must not
    from transformers import LogitsProcessor

    from plugins.models.batch import Batch
    from plugins.models.llava import LlavaAdapter

__all__ = ["Method", "MethodConfig", "MethodConfigError", "ForwardHooks", "source_sha256", "modules_sha256",
           "cache_dir", "cached_artifact", "GENERATION_SETTINGS", "decoding_of"]

REPO_ROOT = Path(__file__).resolve().parents[2]


GENERATION_SETTINGS = frozenset({"num_beams"})
"""The ``generate`` settings a method may choose (:meth:`Method.generation_settings`)."""


def decoding_of(method: Optional["Method"]) -> dict[str, Any]:
    """The checked search settings of ``method`` (greedy for None), with ``strategy`` named for provenance.

    >>> decoding_of(None)
    {'strategy': 'greedy', 'num_beams': 1}
    """
    settings = {"num_beams": 1} if method is None else dict(method.generation_settings())
    unknown = set(settings) - GENERATION_SETTINGS
    if unknown:
        raise ValueError(f"{type(method).__qualname__}.generation_settings() sets {sorted(unknown)}; a method may "
                         f"only choose {sorted(GENERATION_SETTINGS)}")
    beams = settings.get("num_beams", 1)
    if not isinstance(beams, int) or isinstance(beams, bool) or beams < 1:
        raise ValueError(f"{type(method).__qualname__}.generation_settings() num_beams is {beams!r}, expected an "
                         "integer >= 1")
    return {"strategy": "greedy" if beams == 1 else "beam", "num_beams": beams}


class MethodConfigError(ValueError):
    """Invalid method hyper-parameters; each line says ``Method config key: problem``."""


class MethodConfig(StrictConfig):
    """Base of every method's hyper-parameters: frozen, and unknown keys fail with a suggestion.

    Give each field its official default and a one-line comment saying what it does.
    """


class Method:
    """Base class of every method: no intervention at all (plain greedy decoding).

    Subclasses set ``Config`` (a :class:`MethodConfig` subclass) and override any of the four
    extension points. ``name`` is set by ``@register_method``.
    """

    name: ClassVar[str] = ""  # the registered name, set by @register_method
    uses_modules: ClassVar[tuple[str, ...]] = ()  # other plugins.* modules whose code it runs (hashed into its fingerprint)
    Config: ClassVar[type[MethodConfig]] = MethodConfig  # frozen, extra="forbid"; defaults = official defaults
    # True when the method's answers do not depend on how the prompt pass is split and batched:
    # no input transform that pairs rows, no hook that reads or edits a pass's rows or last position
    # (swapping weights in, or steering every position alike, is fine; a hook on the last position
    # that skips LlavaAdapter.in_prefix_pass passes is too), no logits processor that reads the
    # prompt pass. The adapter may then encode a prompt prefix that several items share once. A
    # property may decide per chunk (contrastive methods do).
    shares_prompt_prefixes: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        config = cls.__dict__.get("Config", cls.Config)
        if not (isinstance(config, type) and issubclass(config, MethodConfig)):
            raise TypeError(f"{cls.__module__}.{cls.__qualname__}.Config is {config!r}, expected a subclass of "
                            "plugins.methods.base.MethodConfig (frozen, extra='forbid')")
        settings = config.model_config
        if settings.get("frozen") is not True or settings.get("extra") != "forbid":
            raise TypeError(f"{cls.__module__}.{cls.__qualname__}.Config must stay frozen=True and extra='forbid', "
                            f"got frozen={settings.get('frozen')!r}, extra={settings.get('extra')!r}")

    def __init__(self, config: MethodConfig | Mapping[str, Any] | None = None):
        self.config = self._validate_config(config)

    @classmethod
    def _validate_config(cls, config: Any) -> MethodConfig:
        label = f"{cls.name or cls.__qualname__} config"
        if config is None:
            config = {}
        if isinstance(config, MethodConfig):
            if type(config) is not cls.Config:
                raise MethodConfigError(f"{label}: got a {type(config).__qualname__}, expected {cls.Config.__qualname__} "
                                        "(or a dict of its keys)")
            return config
        if not isinstance(config, Mapping):
            raise MethodConfigError(f"{label}: got a {type(config).__name__}, expected a dict of hyper-parameters or None")
        try:
            return cls.Config.model_validate(dict(config))
        except ValidationError as exc:
            lines = []
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"])
                message = err["msg"].removeprefix("Value error, ")
                lines.append(f"{label}{' ' + key if key else ''}: {message}")
            raise MethodConfigError("\n".join(lines)) from None

    # ------------------------------------------------------------ the four extension points

    def transform_inputs(self, model: "LlavaAdapter", batch: "Batch") -> "Batch":
        """Return the batch to run instead of ``batch`` (same length, same order). Default: unchanged.

        The returned batch may also be k × ``len(batch)`` items: the transformed items first, then
        whole extra streams that share the forward passes (see :meth:`LlavaAdapter.generate`).
        """
        return batch

    def hooks(self, model: "LlavaAdapter", batch: "Batch") -> contextlib.AbstractContextManager:
        """A context manager active during ``generate``; register forward hooks in it (see :class:`ForwardHooks`)."""
        return contextlib.nullcontext()

    def logits_processors(self, model: "LlavaAdapter", batch: "Batch") -> list["LogitsProcessor"]:
        """Logits processors for this chunk, applied after any the caller passes. Default: none."""
        return []

    def postprocess(self, model: "LlavaAdapter", batch: "Batch", texts: list[str]) -> list[str]:
        """Correct the decoded answers (one per item, same order). Default: unchanged."""
        return texts

    def prepare(self, model: "LlavaAdapter") -> Any:
        """Once-per-model work before answering (a tuned method trains or loads its weights). Default: none.

        The runner calls it before it starts the clock, so ``seconds_per_input`` times answering
        only; what preparing cost is :attr:`train_seconds`.
        """
        return None

    @property
    def train_seconds(self) -> Optional[float]:
        """Wall seconds spent training for the weights in use (parameter-tuning methods); None otherwise."""
        return None

    def generation_settings(self) -> dict[str, Any]:
        """How ``generate`` searches: ``{"num_beams": 1}`` (greedy, the default) or more beams.

        Only the search itself may change (keys of :data:`GENERATION_SETTINGS`); sampling never, so
        every result stays deterministic. Beam search keeps transformers' defaults otherwise
        (length penalty 1, no early stopping), as the official OPERA evaluation does.
        """
        return {"num_beams": 1}

    # ------------------------------------------------------------ identity

    def fingerprint_payload(self) -> dict[str, Any]:
        """What identifies this method's behaviour for the runner's cache: name, config, code.

        ``source_sha256`` covers the source of every ``plugins`` module in the class hierarchy
        (the method's module and this base), so editing either marks old results stale;
        ``uses_sha256`` covers the modules a method names in ``uses_modules`` (helpers it calls
        without inheriting from them, such as the attention interface or the scene world).
        """
        cls = type(self)
        payload = {
            "method": self.name,
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "config": self.config.model_dump(mode="json"),
            "source_sha256": source_sha256(cls),
        }
        if self.uses_modules:
            payload["uses_sha256"] = modules_sha256(sorted(set(self.uses_modules)), what=f"{cls.__qualname__}.uses_modules")
        return payload

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__qualname__}({fields})"


def source_sha256(cls: type) -> str:
    """SHA-256 over the source files of the ``plugins.*`` modules defining ``cls`` and its bases."""
    modules = sorted({c.__module__ for c in cls.__mro__ if c.__module__.split(".")[0] == "plugins"})
    return modules_sha256(modules, what=f"class {cls.__qualname__}")


def modules_sha256(modules: Sequence[str], what: str = "") -> str:
    """SHA-256 over the named modules' source files (imported if needed), in the order given."""
    digest = hashlib.sha256()
    for name in modules:
        module = sys.modules.get(name) or importlib.import_module(name)
        path = inspect.getsourcefile(module)
        if path is None:
            raise ValueError(f"no source file for module {name!r}{' (' + what + ')' if what else ''}; cannot fingerprint it")
        with open(path, "rb") as fh:
            digest.update(f"{name}\0".encode() + hashlib.sha256(fh.read()).digest())
    return digest.hexdigest()


class ForwardHooks(contextlib.AbstractContextManager):
    """Forward hooks that exist only inside a ``with`` block: registered on enter, removed on exit.

    Removal happens even when generation raises, so a model never keeps a method's hooks.
    ``add`` returns ``self``, which makes a method's :meth:`Method.hooks` a one-liner::

        def hooks(self, model, batch):
            return ForwardHooks().add(model.decoder_layers[2].self_attn, self._scale_attention)

    >>> import torch
    >>> layer = torch.nn.Linear(2, 2)
    >>> with ForwardHooks().add(layer, lambda module, args, output: output * 0):
    ...     layer(torch.ones(1, 2)).abs().sum().item()
    0.0
    >>> len(layer._forward_hooks)
    0
    """

    def __init__(self) -> None:
        # (module, hook, pre, with_kwargs); see torch.nn.Module.register_forward_hook for the signatures
        self._specs: list[tuple[Any, Callable[..., Any], bool, bool]] = []
        self._handles: list[Any] = []

    def add(self, module: Any, hook: Callable[..., Any], *, pre: bool = False, with_kwargs: bool = False) -> "ForwardHooks":
        """Queue ``hook`` on ``module``: a forward hook, or a forward pre-hook with ``pre=True``."""
        if not hasattr(module, "register_forward_hook"):
            raise TypeError(f"cannot hook a {type(module).__name__}, expected a torch.nn.Module")
        if not callable(hook):
            raise TypeError(f"hook is a {type(hook).__name__}, expected a callable")
        if self._handles:
            raise RuntimeError("ForwardHooks.add() inside the with block; add every hook before entering")
        self._specs.append((module, hook, pre, with_kwargs))
        return self

    def __enter__(self) -> "ForwardHooks":
        if self._handles:
            raise RuntimeError("ForwardHooks entered twice; use one instance per with block")
        try:
            for module, hook, pre, with_kwargs in self._specs:
                register = module.register_forward_pre_hook if pre else module.register_forward_hook
                self._handles.append(register(hook, with_kwargs=with_kwargs))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> Optional[bool]:
        self._remove()
        return None

    def _remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()


# ---------------------------------------------------------------- cached artifacts

def cache_dir() -> Path:
    """Where methods keep what they compute once per model (steering directions, a detector's weights).

    ``$ALIGNSCOPE_CACHE`` or ``<repo>/build/cache``; never committed, safe to delete.
    """
    return Path(os.environ.get("ALIGNSCOPE_CACHE") or REPO_ROOT / "build" / "cache")


def cached_artifact(kind: str, key: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
    """``compute()``'s result, computed once per ``key`` and kept under ``cache_dir()/kind/``.

    ``key`` is JSON (for a method: its fingerprint payload plus the checkpoint hash, so new code,
    a new config or new weights compute afresh). The value is anything ``torch.save`` stores
    (tensors, dicts, lists); it is written atomically, and a file that does not load (a crash
    elsewhere, a truncated copy) is computed again instead of failing.

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     os.environ["ALIGNSCOPE_CACHE"] = tmp
    ...     calls = []
    ...     first = cached_artifact("demo", {"a": 1}, lambda: calls.append(1) or {"x": 2})
    ...     again = cached_artifact("demo", {"a": 1}, lambda: calls.append(1) or {"x": 3})
    ...     del os.environ["ALIGNSCOPE_CACHE"]
    >>> first, again, len(calls)
    ({'x': 2}, {'x': 2}, 1)
    """
    import torch

    from plugins.api import write_atomic

    if not kind or not kind.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"artifact kind {kind!r} must be a name of letters, digits, '-' or '_'")
    text = json.dumps(dict(key), sort_keys=True, default=str)
    path = cache_dir() / kind / f"{hashlib.sha256(text.encode('utf-8')).hexdigest()[:32]}.pt"
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a corrupt or foreign file: recompute and overwrite it
            pass
    value = compute()
    buffer = io.BytesIO()
    torch.save(value, buffer)
    write_atomic(path, buffer.getvalue())
    path.with_suffix(".json").write_text(text + "\n", encoding="utf-8")  # what the file was computed from
    return value
