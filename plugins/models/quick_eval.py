"""Quick world probe of a LLaVA checkpoint: POPE's three splits plus attribute and relation questions.

Questions are asked about scenes of the world's "test" stream (never trained on), through the
public Hugging Face path only — ``processor.apply_chat_template``, ``processor(...)``,
``model.generate`` (greedy), ``processor.batch_decode`` — and scored with the pinned official
POPE parser (:func:`plugins.benchmarks.pope.pope_metrics`). Per scene, as in POPE: 3 questions
about present objects and 3 about absent ones, the absent ones *random*, *popular* or
*adversarial* by the training split's statistics (:meth:`WorldStats.estimate`). Attribute
questions (2 per scene, one yes, one no) come with random wrong colours and with *adversarial*
ones (the category's prior colour: a knowledge-conflict probe); relation questions (2 per scene)
ask a relation that holds or its opposite.

>>> r = {"pope": {"random": {"accuracy": 0.9}, "popular": {"accuracy": 0.85}, "adversarial": {"accuracy": 0.8}}}
>>> round(pope_gap(r), 3)
0.1
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from plugins.benchmarks.pope import POPE_SPLITS, pope_metrics
from plugins.world import (
    Question, SceneSampler, WorldConfig, WorldStats, attribute_questions, existence_questions,
    relation_questions, render_batch,
)

EVAL_SPLIT = "test"  # the world's held-out scene stream


def probe_questions(world: WorldConfig, n_scenes: int, stats: WorldStats) -> dict[str, list[tuple[int, Question]]]:
    """Probe name -> (scene index, question) pairs over test scenes ``0 .. n_scenes-1``."""
    sets: dict[str, list[tuple[int, Question]]] = {f"pope_{s}": [] for s in POPE_SPLITS}
    sets.update({"attribute_random": [], "attribute_adversarial": [], "relation": []})
    for i, scene in enumerate(SceneSampler(world).scenes(EVAL_SPLIT, n_scenes)):
        for split in POPE_SPLITS:
            qs = existence_questions(scene, world, strategy=split, n=6, stats=stats, yes_ratio=0.5)
            sets[f"pope_{split}"] += [(i, q) for q in qs]
        for strategy in ("random", "adversarial"):
            qs = attribute_questions(scene, world, strategy=strategy, n=2, stats=stats, yes_ratio=0.5)
            sets[f"attribute_{strategy}"] += [(i, q) for q in qs]
        sets["relation"] += [(i, q) for q in relation_questions(scene, world, n=2, yes_ratio=0.5)]
    return sets


@torch.no_grad()
def answer(model: Any, processor: Any, images: np.ndarray, questions: Sequence[tuple[int, str]],
           batch_size: int = 128, max_new_tokens: int = 3, desc: str = "answer") -> list[str]:
    """Greedy answers to ``(image index, question text)`` pairs, through processor and ``generate``."""
    model.eval()
    processor.tokenizer.padding_side = "left"  # new tokens go on the right
    out: list[str] = []
    for start in tqdm(range(0, len(questions), batch_size), desc=desc, leave=False, disable=len(questions) <= batch_size):
        chunk = questions[start:start + batch_size]
        prompts = [processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}],
            add_generation_prompt=True) for _, text in chunk]
        inputs = processor(images=[images[i] for i, _ in chunk], text=prompts, padding=True, return_tensors="pt")
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)  # (B, T + new)
        new = generated[:, inputs["input_ids"].shape[1]:]  # (B, new)
        out += [text.strip() for text in processor.batch_decode(new, skip_special_tokens=True)]
    return out


def evaluate(model: Any, processor: Any, world: WorldConfig, n_scenes: int = 500, batch_size: int = 128,
             stats_scenes: int = 2000) -> dict[str, Any]:
    """POPE random / popular / adversarial, attribute and relation metrics on ``n_scenes`` test scenes."""
    t0 = time.perf_counter()
    stats = WorldStats.estimate(world, n=stats_scenes, split="train")
    scenes = list(SceneSampler(world).scenes(EVAL_SPLIT, n_scenes))
    images = render_batch(scenes, world)  # (N, H, W, 3) uint8
    results: dict[str, Any] = {}
    n_questions = 0
    for name, pairs in probe_questions(world, n_scenes, stats).items():
        answers = answer(model, processor, images, [(i, q.text) for i, q in pairs], batch_size, desc=name)
        metrics = pope_metrics(answers, [q.answer for _, q in pairs])
        results[name] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
        n_questions += len(pairs)
    return {
        "pope": {s: results.pop(f"pope_{s}") for s in POPE_SPLITS},
        "attribute": {s: results.pop(f"attribute_{s}") for s in ("random", "adversarial")},
        "relation": results.pop("relation"),
        "n_scenes": n_scenes, "n_questions": n_questions, "split": EVAL_SPLIT,
        "stats": {"split": "train", "n_scenes": stats_scenes},
        "parser": "pope-official-v1", "decoding": "greedy",
        "seconds": round(time.perf_counter() - t0, 1),
    }


def pope_gap(results: dict[str, Any]) -> float:
    """POPE random accuracy minus adversarial accuracy: how much co-occurrence costs."""
    return results["pope"]["random"]["accuracy"] - results["pope"]["adversarial"]["accuracy"]


def summary_rows(results: dict[str, Any]) -> list[tuple[str, float, float, float]]:
    """``(probe, accuracy %, F1 %, yes-ratio)`` rows for a printed table or the model card."""
    rows = [(f"POPE {s}", results["pope"][s]) for s in POPE_SPLITS]
    rows += [(f"attribute ({s})", results["attribute"][s]) for s in ("random", "adversarial")]
    rows += [("relation", results["relation"])]
    return [(name, 100 * m["accuracy"], 100 * m["f1"], m["yes_ratio"]) for name, m in rows]


def format_table(results: dict[str, Any]) -> str:
    """A Markdown table of :func:`summary_rows`."""
    lines = ["| probe | accuracy % | F1 % | yes-ratio |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {name} | {acc:.1f} | {f1:.1f} | {yes:.2f} |" for name, acc, f1, yes in summary_rows(results)]
    return "\n".join(lines)


def presence_probe(vision_tower: Any, world: WorldConfig, layer: int, n_train: int = 2000, n_test: int = 500,
                   steps: int = 300, seed: int = 0) -> dict[str, float]:
    """How well a vision tower grounds objects: a linear probe for "is category c in the image?".

    Features: the mean of the patch tokens the LLaVA reads (hidden state ``layer``, CLS dropped),
    frozen; a logistic-regression head per category is fitted on ``n_train`` train scenes and
    scored on ``n_test`` test scenes. ``base_rate`` is the accuracy of always answering the
    majority label (most categories are absent from most scenes).
    """
    from plugins.models.tokenizer import pixel_values  # local: keeps this module light for the CLI

    def features(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        scenes = list(SceneSampler(world).scenes(split, n))
        px = torch.from_numpy(pixel_values(render_batch(scenes, world)))  # (n, 3, H, W)
        with torch.no_grad():
            feats = torch.cat([vision_tower(pixel_values=px[i:i + 250], output_hidden_states=True)
                               .hidden_states[layer][:, 1:].mean(dim=1) for i in range(0, n, 250)])  # (n, C)
        labels = torch.tensor([[c in s.categories for c in world.categories] for s in scenes], dtype=torch.float32)
        return feats, labels  # (n, C), (n, n_categories)

    x, y = features("train", n_train)
    xt, yt = features(EVAL_SPLIT, n_test)
    mu, sd = x.mean(0), x.std(0) + 1e-5
    x, xt = (x - mu) / sd, (xt - mu) / sd
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], y.shape[1])
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = ((head(xt) > 0).float() == yt).float().mean().item()
    base = max(yt.mean().item(), 1 - yt.mean().item())
    return {"accuracy": round(accuracy, 4), "base_rate": round(base, 4), "n_train": n_train, "n_test": n_test}
