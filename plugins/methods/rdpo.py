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

**Here**: the ``dpo`` pairs, plus for every image its nearest different image of the set by
cosine similarity of the model's own image embedding (mean projected image feature,
:func:`plugins.tuning.preferences.with_retrieval`).

**Deviations.** Those of ``dpo`` (full fine-tuning, lr 5e-5, 300 steps, ``sft_weight`` 1), and:
Re-Align's rejected answers are GPT-written rewrites that inject content of the retrieved
image; here the text pairs are exactly ``dpo``'s, so the two methods differ only in the visual
term; no warm-up (as ``dpo``), instead of 3 %.

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
        scoring: Literal["answer", "official"] = "answer"  # how rejected / retrieved answers are scored (see plugins.tuning.losses.runner_up_logps)
