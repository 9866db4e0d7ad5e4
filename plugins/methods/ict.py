"""ICT: image-object cross-level trusted intervention (Chen et al. 2024, arXiv 2411.15268, CVPR 2025).

"ICT: Image-Object Cross-Level Trusted Intervention for Mitigating Object Hallucination in Large
Vision-Language Models". ICT finds the attention heads whose outputs tell a trusted input from an
untrusted one and, while answering, shifts those heads' outputs towards the trusted side. Official
code: github.com/THU-BPM/ICT (read at commit dd7c446); file and line numbers below refer to it.

**The intervention** (the paper's equation, README)::

    H^(l+1) = H^(l) + Σ_n ( Attn_n^(l)(H^(l)) + 1_img,n^(l) · α · S_n^(l) + 1_obj,n^(l) · β · S_obj,n^(l) ) · W_o^(l)

Head ``n`` of layer ``l``'s output (the slice of ``self_attn.o_proj``'s input) gets
``α · S_n = α · σ_n · u_n`` when the head was selected at the image level and
``β · σ_obj,n · u_obj,n`` when selected at the object level, at the last position only: the last
prompt token, then every generated token (``lt_modulated_vector_add`` with
``start_edit_location='lt'``, ``ICT/val_ict_pope.py`` lines 178-198). ``u`` is the unit vector
from the mean untrusted to the mean trusted activation of that head, ``σ`` the standard deviation
of all demo activations projected on ``u`` (``get_interventions_dict``, lines 26-46, with
``use_center_of_mass=True``; ``com_directions``, lines 96-107).

**Trusted and untrusted demos** (``ICT/get_vectors/*.py``): POPE questions answered at the last
token of ``USER: <image>\\n{question} ASSISTANT: {answer}``, activations of every head.

* trusted (``get_base_vector.py``): the image and the true answer;
* untrusted, image level (``get_hallucinated_vector.py`` lines 46-55): for a "yes" question the
  Gaussian-blurred image (radius 5) and "yes"; for a "no" question the image and the wrong "yes";
* untrusted, object level (``get_object_vector.py`` lines 34-45): for a "yes" question an image in
  which the asked object is hidden and "yes"; for a "no" question the blurred image and "no".

**Head selection** (``val_ict_pope.py`` lines 110-174): trusted (label 0) and untrusted (label 1)
activations are shuffled with the seed; per head a logistic-regression probe (sklearn
``LogisticRegression``: L2, C = 1) is scored by 2-fold cross-validation, and the heads with the
highest mean accuracy are intervened on, separately per level.

**Official defaults**: ``alpha = 8`` for both levels (README run command and the argparse default,
``val_ict_pope.py`` line 67; the code uses the same ``alpha`` for β), ``--type both``, 1500 demo
questions (README ``--length 1500``; argparse default 3000), seed 55 (README), 2 folds (``k = 2``, lines 125 and 148),
256 intervened units (README ``--num_heads 256``, line 66) out of 32 layers × 128 per layer
(lines 83-84).

**Deviations.**

* Unit of intervention: the official code splits ``o_proj``'s *output* (4096 wide on LLaVA-1.5-7B)
  into ``num_heads = 128`` slices of 32 (lines 84, 88-92, 180), which are neither heads nor before
  ``W_o``. Here a unit is a real attention head before ``W_o``, as in the paper's equation (a
  forward pre-hook on ``o_proj``), and the number of heads is a share: ``head_fraction = 256 /
  (32 × 128) = 1/16`` of all heads (on LLaVA-1.5-7B 64 of 1024 heads, the same 8192 intervened
  coordinates per level as officially; on the tiny default model 1 of 16 heads).
* Demo set: the first scenes with at least 3 objects of the synthetic world's held-out ``demo``
  stream (:mod:`plugins.trainers.directions`), 3 present and 3 random absent objects each (POPE's
  protocol), 1500 questions. Officially: the first 1500 lines of a POPE question file on COCO.
  The object is hidden by blurring its exact box from the world's ground truth; the paper locates
  it with Grounding DINO, and the official script reads pre-made per-question ``black.jpg`` files
  that are not in the repository. The blur is a Gaussian with σ = ``blur_radius`` px (Pillow's
  ``GaussianBlur`` radius is its standard deviation), on 64 px world images a strong blur.
* Probes: the same objective (L2-regularised logistic regression, C = 1, unpenalised
  intercept) solved with L-BFGS in torch for all heads at once instead of sklearn's ``saga``.
* The official POPE prompt appends "Please answer this question in one word."; here every
  method answers the benchmark's own prompt.

A strength ``alpha = 0`` registers no hook, so it is plain greedy decoding, bit for bit.

Cost: ``3 × num_demos`` forward passes and ``folds × levels`` batched probe fits once per model
(:func:`plugins.trainers.ict.ict_directions`, cached, see :class:`plugins.methods.steering.SteeringMethod`);
afterwards one vector addition per intervened layer and step.

>>> ICT().config.alpha, ICT().config.levels, ICT().config.num_demos
(8.0, 'both', 1500)
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Optional, Sequence

import torch
from pydantic import Field

from plugins.methods.base import MethodConfig
from plugins.methods.steering import SteeringMethod
from plugins.models.hooks import ForwardHooks
from plugins.registry import register_method
from plugins.trainers.ict import LEVELS, head_shape, ict_directions

if TYPE_CHECKING:
    from plugins.models.adapter import LlavaAdapter
    from plugins.models.batch import Batch

__all__ = ["ICT", "AddAtLastPosition", "layer_shifts"]


# ---------------------------------------------------------------- the intervention

class AddAtLastPosition:
    """A forward pre-hook adding ``shift`` (H·hd,) to the last position of a module's first input (B, T, H·hd).

    Passes that encode a shared prompt prefix (``model.in_prefix_pass``) end before the prompt's
    last token, so they are left alone: the shift lands on the last prompt token and on every
    generated one, as in a single pass over the whole prompt.
    """

    def __init__(self, shift: torch.Tensor, model: Any = None):
        self.shift = shift  # (H·hd,): α·σ·u in the slices of the selected heads, zero elsewhere
        self.model = model  # the adapter, asked whether a pass is a prefix pass (None: every pass is shifted)

    def __call__(self, module: Any, args: tuple[Any, ...]) -> Optional[tuple[Any, ...]]:
        if self.model is not None and self.model.in_prefix_pass:
            return None
        x = args[0]  # (B, T, H·hd): every head's output, before o_proj
        shifted = x.clone()  # hooks never modify their inputs in place
        shifted[:, -1] += self.shift.to(device=x.device, dtype=x.dtype)
        return (shifted, *args[1:])


def layer_shifts(selections: Sequence[dict[str, torch.Tensor]], alpha: float, n_layers: int, n_heads: int,
                 head_dim: int) -> dict[int, torch.Tensor]:
    """Per intervened layer, the (H·hd,) vector ``α · Σ σ·u`` over the selected heads of every level.

    >>> sel = {"heads": torch.tensor([[0, 1]]), "directions": torch.tensor([[0.6, 0.8]]), "stds": torch.tensor([0.5])}
    >>> layer_shifts([sel], 8.0, n_layers=1, n_heads=2, head_dim=2)[0].tolist()
    [0.0, 0.0, 2.4000000953674316, 3.200000047683716]
    """
    shifts = torch.zeros(n_layers, n_heads, head_dim)  # (L, H, hd)
    for selection in selections:
        for (layer, head), unit, std in zip(selection["heads"].tolist(), selection["directions"], selection["stds"]):
            shifts[layer, head] += alpha * std * unit.float()
    return {layer: shifts[layer].flatten() for layer in range(n_layers) if shifts[layer].any()}


# ---------------------------------------------------------------- the method

@register_method("ict")
class ICT(SteeringMethod):
    """Shift the heads that best separate trusted from untrusted inputs towards the trusted side (Chen et al. 2024)."""

    artifact_kind = "ict-directions"
    trainer = staticmethod(ict_directions)
    answer_only = frozenset({"alpha"})  # α only scales the shift; the heads and directions do not depend on it
    shares_prompt_prefixes: ClassVar[bool] = True  # its shift skips the adapter's prefix passes (AddAtLastPosition)

    class Config(MethodConfig):
        """ICT's hyper-parameters; defaults from the official README run commands and ``val_ict_pope.py``."""

        alpha: float = Field(8.0, ge=0)  # α = β: shift in stds along each head's direction (--alpha 8); 0 = none
        levels: Literal["both", "image", "object"] = "both"  # which interventions to apply (--type both)
        head_fraction: float = Field(1 / 16, gt=0, le=1)  # share of heads shifted per level: 256 of 32×128 units officially
        num_demos: int = Field(1500, ge=4)  # demo questions (README --length 1500)
        folds: int = Field(2, ge=2)  # cross-validation folds of each head's probe (KFold(n_splits=2))
        blur_radius: float = Field(5.0, gt=0)  # σ in px of the blur making untrusted images (GaussianBlur(radius=5))
        seed: int = Field(55, ge=0)  # shuffles the probe data before the folds (README --seed 55)
        world: Optional[dict[str, Any]] = None  # WorldConfig fields of the demo world (default: the default world)

    def hooks(self, model: "LlavaAdapter", batch: "Batch") -> contextlib.AbstractContextManager:
        """A pre-hook on ``o_proj`` of every layer holding a selected head; none when ``alpha`` is 0."""
        if self.config.alpha == 0:
            return contextlib.nullcontext()
        directions = self.directions(model)
        n_heads, head_dim = head_shape(model)
        shifts = layer_shifts([directions[level] for level in LEVELS[self.config.levels]], self.config.alpha,
                              len(model.decoder_layers), n_heads, head_dim)
        hooks = ForwardHooks()
        for layer, shift in sorted(shifts.items()):
            hooks.add(model.decoder_layers[layer].self_attn.o_proj, AddAtLastPosition(shift, model), pre=True)
        return hooks
