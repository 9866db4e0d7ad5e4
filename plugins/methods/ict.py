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
  stream (:mod:`plugins.methods.steering`), 3 present and 3 random absent objects each (POPE's
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
(cached, see :class:`plugins.methods.steering.SteeringMethod`); afterwards one vector addition per
intervened layer and step.

>>> ICT().config.alpha, ICT().config.levels, ICT().config.num_demos
(8.0, 'both', 1500)
"""
from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from plugins.methods.base import ForwardHooks, MethodConfig
from plugins.methods.steering import DEMO_BATCH, SteeringMethod, demo_scenes, encode_with_answers
from plugins.registry import register_method

if TYPE_CHECKING:
    from plugins.models.batch import Batch
    from plugins.models.llava import LlavaAdapter

__all__ = ["ICT", "AddAtLastPosition", "gaussian_blur", "probe_accuracies", "trusted_directions", "layer_shifts"]

PROBE_C = 1.0  # inverse L2 strength of the probes: sklearn LogisticRegression's default, as officially
QUESTIONS_PER_SCENE = 6  # POPE: 3 present + 3 absent objects per image
LEVELS = {"both": ("image", "object"), "image": ("image",), "object": ("object",)}


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


# ---------------------------------------------------------------- head selection

def probe_accuracies(x: torch.Tensor, y: torch.Tensor, folds: int, c: float = PROBE_C) -> torch.Tensor:
    """Mean held-out accuracy of a logistic probe per unit: ``x`` (n, U, d), labels ``y`` (n,) in {0, 1} → (U,).

    Folds are contiguous, like sklearn's ``KFold`` without shuffling (shuffle ``x`` first). Each
    probe minimises ``½‖w‖² + c · Σ log(1 + exp(−s·(w·x + b)))`` with ``s = ±1``, as sklearn's
    ``LogisticRegression`` does; all units are fitted together with L-BFGS in float64.
    """
    n = x.shape[0]
    sizes = [n // folds + (1 if i < n % folds else 0) for i in range(folds)]
    bounds = np.cumsum([0] + sizes)
    accuracies = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        test = torch.zeros(n, dtype=torch.bool)
        test[start:stop] = True
        w, b = _fit_logistic(x[~test], y[~test], c)
        predicted = (torch.einsum("nud,ud->nu", x[test].double(), w) + b) > 0  # (n_test, U)
        accuracies.append((predicted == y[test, None].bool()).double().mean(0))
    return torch.stack(accuracies).mean(0).float()


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, c: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (U, d) and intercepts (U,) of U independent L2 logistic regressions on x (n, U, d)."""
    with torch.inference_mode(False), torch.enable_grad():
        x = x.double().clone()  # a normal tensor even if the activations were recorded in inference mode
        sign = (2 * y.double() - 1)[:, None].clone()  # (n, 1): +1 for label 1, -1 for label 0
        w = torch.zeros(x.shape[1], x.shape[2], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, history_size=20, tolerance_grad=1e-6,
                                      tolerance_change=1e-10, line_search_fn="strong_wolfe")

        def objective() -> torch.Tensor:
            optimizer.zero_grad()
            margins = sign * (torch.einsum("nud,ud->nu", x, w) + b)  # (n, U)
            loss = 0.5 * (w * w).sum() + c * F.softplus(-margins).sum()  # the U problems are independent: sum them
            loss.backward()
            return loss

        optimizer.step(objective)
    return w.detach(), b.detach()


def trusted_directions(trusted: torch.Tensor, untrusted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit mean-difference directions (U, d) from untrusted to trusted, and the std (U,) of all activations along them.

    ``trusted`` and ``untrusted`` are (n, U, d); the std is the population std over both sets.

    >>> u, s = trusted_directions(torch.tensor([[[1.0, 0.0]], [[3.0, 0.0]]]), torch.tensor([[[-1.0, 0.0]], [[-3.0, 0.0]]]))
    >>> u.tolist(), round(s.item() ** 2, 4)
    ([[1.0, 0.0]], 5.0)
    """
    units = F.normalize(trusted.float().mean(0) - untrusted.float().mean(0), dim=-1)  # (U, d)
    both = torch.cat([trusted, untrusted]).float()  # (2n, U, d)
    stds = torch.einsum("nud,ud->nu", both, units).std(dim=0, unbiased=False)  # (U,)
    return units, stds


def select_heads(trusted: torch.Tensor, untrusted: torch.Tensor, k: int, folds: int, seed: int) -> dict[str, torch.Tensor]:
    """The ``k`` heads whose probes best tell ``trusted`` from ``untrusted`` (each (n, L, H, hd)), with their shifts.

    Returns ``heads`` (k, 2) as (layer, head), unit ``directions`` (k, hd), ``stds`` (k,) and every
    head's probe ``accuracy`` (L, H). Ties keep the earlier head.
    """
    n, n_layers, n_heads, head_dim = trusted.shape
    x = torch.cat([trusted, untrusted]).reshape(2 * n, n_layers * n_heads, head_dim)  # (2n, U, hd)
    y = torch.cat([torch.zeros(n), torch.ones(n)])  # trusted 0, untrusted 1, as officially
    order = torch.randperm(2 * n, generator=torch.Generator().manual_seed(seed))  # the folds need mixed labels
    accuracy = probe_accuracies(x[order], y[order], folds)  # (U,)
    top = sorted(range(n_layers * n_heads), key=lambda u: (-float(accuracy[u]), u))[:k]
    units, stds = trusted_directions(trusted.reshape(n, -1, head_dim)[:, top], untrusted.reshape(n, -1, head_dim)[:, top])
    return {"heads": torch.tensor([[u // n_heads, u % n_heads] for u in top], dtype=torch.long),
            "directions": units, "stds": stds, "accuracy": accuracy.reshape(n_layers, n_heads)}


# ---------------------------------------------------------------- untrusted images

def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """``image`` (H, W, 3) uint8 blurred by a Gaussian of standard deviation ``sigma`` px (edges replicated)."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()  # (2r+1,)
    planes = torch.from_numpy(image).permute(2, 0, 1)[:, None].float()  # (3, 1, H, W)
    planes = F.pad(planes, (radius, radius, radius, radius), mode="replicate")
    planes = F.conv2d(F.conv2d(planes, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))  # separable
    return planes[:, 0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def blur_box(image: np.ndarray, blurred: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``image`` with the box ``(x0, y0, x1, y1)`` taken from ``blurred``: one object hidden, the rest intact."""
    x0, y0, x1, y1 = box
    out = image.copy()
    out[y0:y1, x0:x1] = blurred[y0:y1, x0:x1]
    return out


# ---------------------------------------------------------------- the method

@register_method("ict")
class ICT(SteeringMethod):
    """Shift the heads that best separate trusted from untrusted inputs towards the trusted side (Chen et al. 2024)."""

    artifact_kind = "ict-directions"
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
        n_heads, head_dim = _head_shape(model)
        shifts = layer_shifts([directions[level] for level in LEVELS[self.config.levels]], self.config.alpha,
                              len(model.decoder_layers), n_heads, head_dim)
        hooks = ForwardHooks()
        for layer, shift in sorted(shifts.items()):
            hooks.add(model.decoder_layers[layer].self_attn.o_proj, AddAtLastPosition(shift, model), pre=True)
        return hooks

    # ------------------------------------------------------------ directions

    def compute_directions(self, model: "LlavaAdapter") -> dict[str, Any]:
        """Per level, the selected heads with unit directions, stds and every head's probe accuracy (CPU)."""
        from plugins.world import existence_questions, render

        world, radius = self.world, self.config.blur_radius
        n_scenes = math.ceil(self.config.num_demos / QUESTIONS_PER_SCENE)
        rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, str, str]] = []  # image, blurred, object-hidden, q, label
        for scene in demo_scenes(world, n_scenes, min_objects=QUESTIONS_PER_SCENE // 2):
            image = render(scene, world)
            blurred = gaussian_blur(image, radius)
            for q in existence_questions(scene, world, strategy="random", n=QUESTIONS_PER_SCENE, yes_ratio=0.5):
                hidden = blur_box(image, blurred, scene.get(q.target[0]).bbox) if q.answer == "yes" else blurred
                rows.append((image, blurred, hidden, q.text, q.answer))
        rows = rows[:self.config.num_demos]
        questions = [r[3] for r in rows]
        trusted = _head_activations(model, [r[0] for r in rows], questions, [r[4] for r in rows])
        untrusted = {
            "image": lambda: _head_activations(
                model, [r[1] if r[4] == "yes" else r[0] for r in rows], questions, ["yes"] * len(rows)),
            "object": lambda: _head_activations(
                model, [r[2] for r in rows], questions, [r[4] for r in rows]),
        }
        n_layers, n_heads = trusted.shape[1:3]
        k = max(1, round(self.config.head_fraction * n_layers * n_heads))
        return {level: select_heads(trusted, untrusted[level](), k, self.config.folds, self.config.seed)
                for level in LEVELS[self.config.levels]}


def _head_shape(model: "LlavaAdapter") -> tuple[int, int]:
    """(heads, head_dim) of the language model's attention, from its config and ``o_proj``'s input width."""
    n_heads = int(model.config.text_config.num_attention_heads)
    width = model.decoder_layers[0].self_attn.o_proj.in_features
    if width % n_heads:
        raise ValueError(f"o_proj takes {width} features, not a multiple of num_attention_heads={n_heads}")
    return n_heads, width // n_heads


@torch.no_grad()
def _head_activations(model: "LlavaAdapter", images: Sequence[np.ndarray], questions: Sequence[str],
                      answers: Sequence[str]) -> torch.Tensor:
    """(n, L, H, hd) float32 CPU: every head's output at the last token of ``question`` answered by ``answer``."""
    from plugins.models.batch import Batch
    from plugins.models.llava import cache_keyword

    n_heads, head_dim = _head_shape(model)
    chunks = []
    for start in range(0, len(questions), DEMO_BATCH):
        stop = start + DEMO_BATCH
        batch = Batch(images[start:stop], questions[start:stop])
        encoded = encode_with_answers(model, batch, answers[start:stop])
        # Six questions per image: everything before the last token goes into a prompt cache that
        # encodes each image and each shared prefix once; only the last token's pass is read.
        with model.shared_image_features():
            cache, _ = model.prompt_cache(encoded, encoded.prompt_length - 1)
        seen: list[torch.Tensor] = []
        hooks = ForwardHooks()
        for layer in model.decoder_layers:
            hooks.add(layer.self_attn.o_proj, lambda module, args: seen.append(args[0][:, -1].float().cpu()), pre=True)
        with hooks:
            model.model(input_ids=encoded.input_ids[:, -1:], attention_mask=encoded.attention_mask,
                        position_ids=encoded.position_ids[:, -1:], **{cache_keyword(): cache}, use_cache=True,
                        logits_to_keep=1)
        chunks.append(torch.stack(seen, dim=1).reshape(len(batch), len(seen), n_heads, head_dim))  # (B, L, H, hd)
    return torch.cat(chunks)
