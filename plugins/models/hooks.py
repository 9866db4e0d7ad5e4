"""Forward hooks on a model's modules that exist only inside a ``with`` block.

Methods change hidden states and attention through hooks (:meth:`plugins.methods.base.Method.hooks`
returns one of these), and the adapter de-duplicates images in the vision tower with them
(:func:`plugins.models.images.distinct_image_features`). Either way a hook must never outlive the
call it was made for.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Optional

__all__ = ["ForwardHooks"]


class ForwardHooks(contextlib.AbstractContextManager):
    """Forward hooks that exist only inside a ``with`` block: registered on enter, removed on exit.

    Removal happens even when generation raises, so a model never keeps a method's hooks.
    ``add`` returns ``self``, which makes a method's ``hooks`` a one-liner::

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
