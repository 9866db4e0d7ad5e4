"""The method interface: what a mitigation method may change, through public extension points only.

A method is a :class:`Method` subclass registered by name (``@register_method("vcd")``) with a
frozen pydantic ``Config`` whose defaults are the official ones. Around every call of
``model.generate`` the adapter (:class:`plugins.models.adapter.LlavaAdapter`) applies the method's
four extension points (the contract :class:`plugins.models.intervention.Intervention`), per chunk of
the batch, in this order:

1. :meth:`Method.transform_inputs` — change the inputs (another prompt, a transformed image);
2. :meth:`Method.hooks` — a context manager holding forward (pre-)hooks, removed on exit;
3. :meth:`Method.logits_processors` — ``transformers`` ``LogitsProcessor`` objects
   (``__call__(input_ids, scores) -> scores``, never mutating their inputs) for decoding-time
   methods; a contrastive one runs its second forward pass inside its own processor, the way
   ``UnbatchedClassifierFreeGuidanceLogitsProcessor`` does;
4. :meth:`Method.postprocess` — correct the decoded texts (post-decoding methods).

Every default does nothing, so the unmitigated ``baseline`` is a subclass with no overrides.
Nothing patches ``generate``. A method that draws random numbers seeds them from the batch, never
from a global generator: per image with ``batch.image_seed(i)`` (a hash of the batch seed and the
image's pixels: items that show the same image share the draw; VCD's noise, RITUAL's views) or
per item with ``batch.item_seed(i)`` (a hash of the batch seed and the item's id), so that results
do not depend on how the items are chunked.

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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from pydantic import ValidationError

from plugins.config import StrictConfig

if TYPE_CHECKING:  # the adapter imports torch; this module must not
    from transformers import LogitsProcessor

    from plugins.models.adapter import LlavaAdapter
    from plugins.models.batch import Batch

__all__ = ["Method", "MethodConfig", "MethodConfigError"]


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
        """A context manager active during ``generate``; register forward hooks in it (see
        :class:`plugins.models.hooks.ForwardHooks`)."""
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

    # ------------------------------------------------------------ identity

    def fingerprint_payload(self) -> dict[str, Any]:
        """What identifies this method in a cell's fingerprint besides its code: name, class, resolved config.

        Its code is identified by the runner (:mod:`plugins.runner.fingerprint`): the normalised
        syntax trees of every module the method's module imports, found from the imports.
        """
        cls = type(self)
        return {"method": self.name, "class": f"{cls.__module__}:{cls.__qualname__}",
                "config": self.config.model_dump(mode="json")}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__qualname__}({fields})"
