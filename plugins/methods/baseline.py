"""The unmitigated model: plain greedy decoding, no intervention.

Every reproduced table has this row; a mitigation method is judged by its difference to it.
Its name is :data:`plugins.api.BASELINE`, the name result records use for the plain model.

>>> from plugins.registry import create_method
>>> method = create_method("baseline")
>>> method.name, method.logits_processors(None, None), method.postprocess(None, None, ["Yes."])
('baseline', [], ['Yes.'])
"""
from __future__ import annotations

from plugins.methods.base import Method, MethodConfig
from plugins.registry import register_method


@register_method("baseline")
class Baseline(Method):
    """No intervention: the model's own greedy answer (the reference row of every table)."""

    shares_prompt_prefixes = True

    class Config(MethodConfig):
        """No hyper-parameters."""
