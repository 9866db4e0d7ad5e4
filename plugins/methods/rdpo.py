"""Re-Align's rDPO: DPO plus a preference for the answer's own image over a retrieved similar one (Xing et al. 2025).

Paper: Xing et al., "Re-Align: Aligning Vision Language Models via Retrieval-Augmented Direct
Preference Optimization", arXiv 2502.13146. Official code: github.com/taco-group/Re-Align
(read at a82ce56), ``rDPOtrainer.py`` ``dpo_loss``::

    L = −log σ(β · [(log π(y_w|x) − log π(y_l|x)) − (log ref(y_w|x) − log ref(y_l|x))])
        − λ · log σ(β · [(log π(y_w|x) − log π(y_w|x̃)) − (log ref(y_w|x) − log ref(y_w|x̃))])
        + sft_weight · CE(y_w | x)

with x̃ the prompt with the *retrieved* image (:func:`plugins.tuning.losses.rdpo_loss`). The
official code adds the two terms (λ = 1); ``visual_weight`` = λ is ours, and 0 trains exactly
what ``dpo`` trains (same data, same steps: a test checks the weights are equal).

**Official defaults** (``train_lora_rdpo.sh``, ``train_rdpo.py``): β = 0.1, learning rate 1e-6,
LoRA (r = 128, α = 256), warm-up 3 % then cosine, weight decay 0, batch 1 per GPU × 8
accumulation steps × 2 GPUs, one epoch, ``sft_weight`` 0. A quirk of the released trainer:
the rejected answer and the answer under the retrieved image are not scored by their own
tokens but by the best *other* token at each position (``_get_noisy_batch_logps`` in the
``dpo_trainer.py`` the README has users copy over trl's); ``scoring="official"`` reproduces
that, the default ``"answer"`` scores the text as the paper's equation and our DESIGN read.

**Here**: for every image its nearest different image of the set by cosine similarity of the
model's own image embedding (mean projected image feature,
:func:`plugins.tuning.preferences.with_retrieval`), and from that one retrieval both preferences,
as the paper builds them (``data="re-align"``, the default; :func:`plugins.tuning.preferences.realign_pairs`):
rejected answers are the faithful answer with the retrieved image's content written in (an object,
a colour or a relation it shows), and the visual term prefers the chosen answer under its own image
to the same answer under the retrieved one. ``data="ha-dpo"`` trains on ``dpo``'s pairs instead.
The matrix separates what the data and the loss each contribute: rDPO against DPO on the same
Re-Align pairs (the loss), and DPO on Re-Align pairs against DPO on HA-DPO pairs (the data).

**Deviations.** Those of ``dpo`` (full fine-tuning, lr 5e-5, 300 steps, ``sft_weight`` 1), and:
Re-Align's rejected answers are rewrites by an LLM; here the world's closed grammar writes them,
one borrowed fact per caption; no warm-up (as ``dpo``), instead of 3 %.

>>> RDPO().config.visual_weight, RDPO().config.scoring
(1.0, 'answer')
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from plugins.methods.dpo import DPO, PreferenceConfig
from plugins.registry import register_method
from plugins.trainers.tuned import train_rdpo

__all__ = ["RDPO"]


@register_method("rdpo")
class RDPO(DPO):
    """Re-Align's rDPO: DPO plus a preference for the answer's own image over a retrieved similar one (Xing et al. 2025).

    Paper, equation, official defaults and deviations: the module docstring.
    """

    trainer = staticmethod(train_rdpo)

    class Config(PreferenceConfig):
        """See the module docstring."""

        visual_weight: float = Field(1.0, ge=0)  # λ of the visual preference term (official: 1, the terms are added); 0 = DPO
        data: Literal["ha-dpo", "re-align"] = "re-align"  # its paper's pairs: rejected answers carry the retrieved image's content
        scoring: Literal["answer", "official"] = "answer"  # how rejected / retrieved answers are scored (see plugins.tuning.losses.runner_up_logps)
