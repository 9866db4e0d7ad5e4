"""The tiny LLaVA's scores on the world's benchmarks, for the model card and the training log.

The same code path as ``alignscope reproduce``'s baseline cells: the registered world benchmarks
(:mod:`plugins.benchmarks.world`: POPE protocol with random / popular / adversarial negatives,
colour and size questions with random and prior negatives, relation questions with opposite
relations) answered greedily through :class:`plugins.models.adapter.LlavaAdapter` and scored with the
pinned official POPE parser. So the numbers in a model card equal the baseline rows of the site,
for the same checkpoint. With ``extras`` the attribute splits are also scored per kind (colour,
size) and POPE is asked again with each instruction suffix (:func:`suffix_probe`).

>>> r = {"pope": {"random": {"accuracy": 0.9}, "popular": {"accuracy": 0.85}, "adversarial": {"accuracy": 0.8}}}
>>> round(pope_gap(r), 3)
0.1
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm.auto import tqdm

from plugins.api import RATE_METRICS
from plugins.benchmarks.pope import PARSER_NAME, pope_metrics
from plugins.benchmarks.pope_files import POPE_SPLITS
from plugins.benchmarks.world_data import ATTRIBUTE_SPLITS
from plugins.world import SceneSampler, WorldConfig, render_batch

EVAL_SPLIT = "test"  # the world's held-out scene stream
PROBES = (("world-pope", "pope"), ("world-attribute", "attribute"), ("world-relation", "relation"),
          ("world-count", "count"))
"""The yes/no probes: (registered benchmark, key in the results)."""
EXTRAS = (("world-caption", "caption"), ("world-representation", "representation"))
"""Free-form captions (CHAIR-style) and representation alignment: scored with ``extras=True``."""
CAPTION_FIGURES = ("chair_s", "chair_i", "attr_chair_i", "rel_chair_i", "recall")
REPRESENTATION_FIGURES = ("cosine_margin_last", "mutual_knn_last", "linear_cka_last")


def evaluate(model: Any, processor: Any, world: WorldConfig, limit: Optional[int] = None, batch_size: int = 64,
             data_dir: Optional[Path] = None, progress: bool = True, extras: bool = False) -> dict[str, Any]:
    """Baseline metrics of ``model`` on every split of the world's question benchmarks.

    ``limit`` keeps the first items of each split (smoke tests); ``None`` scores all of them.
    Returns ``{"pope": {split: metrics}, "attribute": {split: metrics}, "relation": metrics, ...}``;
    with ``extras`` also ``"caption"`` (CHAIR-style figures of free-form captions) and
    ``"representation"`` (image-text alignment inside the LM).
    """
    from plugins.methods.baseline import Baseline
    from plugins.models.adapter import LlavaAdapter
    from plugins.registry import get_benchmark

    t0 = time.perf_counter()
    adapter = LlavaAdapter(model, processor)
    options: dict[str, Any] = {"limit": limit}
    if world != WorldConfig():
        options["world"] = world.model_dump(mode="json")
    results: dict[str, Any] = {}
    n_questions = 0
    extra = EXTRAS if extras else ()

    def rounded(metrics: dict[str, float], yes_no: bool = True) -> dict[str, Any]:
        return {k: (round(v, 4) if k in RATE_METRICS or not yes_no else int(v)) for k, v in metrics.items()}

    for name, key in PROBES + extra:
        yes_no = (name, key) in PROBES  # their other metrics are counts; the extras' are real numbers
        bench = get_benchmark(name)(options, data_dir=data_dir)
        results[key] = {}
        for split in bench.splits:
            items = bench.items(split)
            bar = tqdm(total=len(items), desc=f"{name}/{split}", leave=False, disable=not progress)
            metrics, records = bench.evaluate(adapter, Baseline(), split, items, batch_size=batch_size, seed=0,
                                              progress=bar.update)
            bar.close()
            results[key][split] = rounded(metrics, yes_no)
            n_questions += len(items) if yes_no else 0
            if key == "attribute":
                # Colour and size questions share the split; score each kind apart too.
                kinds = {"color": [], "size": []}
                for record in records:
                    kinds["size" if record["text"].split()[-2] in world.sizes else "color"].append(record)
                results.setdefault("attribute_kinds", {})[split] = {
                    kind: rounded(pope_metrics([r["answer"] for r in rows], [r["label"] for r in rows]))
                    for kind, rows in kinds.items() if rows}
    if extras:
        results["pope_suffix"] = suffix_probe(adapter, world, limit, batch_size, data_dir, progress)
    results["relation"] = results["relation"]["opposite"]
    results["count"] = results["count"]["all"]
    for _, key in extra:
        (results[key],) = results[key].values()  # one split each
    results.update(n_questions=n_questions, split=EVAL_SPLIT, parser=PARSER_NAME, decoding="greedy",
                   test_set=bench.test_set.manifest["version"], seconds=round(time.perf_counter() - t0, 1))
    return results


def suffix_probe(adapter: Any, world: WorldConfig, limit: Optional[int] = None, batch_size: int = 64,
                 data_dir: Optional[Path] = None, progress: bool = True) -> dict[str, dict[str, float]]:
    """POPE accuracy per split with each instruction suffix appended to the question (``none``: as asked).

    The suffixes are :data:`plugins.world.INSTRUCTION_SUFFIXES` (lmms-eval's, VCD's, a plain yes/no
    one), appended after a space exactly as written; a protocol's prompt is then a variable whose
    effect can be measured, not a tokenizer failure.
    """
    from dataclasses import replace

    from plugins.methods.baseline import Baseline
    from plugins.registry import get_benchmark
    from plugins.world import INSTRUCTION_SUFFIXES

    options: dict[str, Any] = {"limit": limit}
    if world != WorldConfig():
        options["world"] = world.model_dump(mode="json")
    bench = get_benchmark("world-pope")(options, data_dir=data_dir)
    out: dict[str, dict[str, float]] = {}
    for name, suffix in [("none", "")] + sorted(INSTRUCTION_SUFFIXES.items()):
        out[name] = {}
        for split in bench.splits:
            items = [replace(item, prompt=f"{item.prompt} {suffix}".strip()) for item in bench.items(split)]
            bar = tqdm(total=len(items), desc=f"suffix {name}/{split}", leave=False, disable=not progress)
            metrics, _ = bench.evaluate(adapter, Baseline(), split, items, batch_size=batch_size, seed=0,
                                        progress=bar.update)
            bar.close()
            out[name][split] = round(metrics["accuracy"], 4)
    return out


def pope_gap(results: dict[str, Any]) -> float:
    """POPE random accuracy minus adversarial accuracy: how much co-occurrence costs."""
    return results["pope"]["random"]["accuracy"] - results["pope"]["adversarial"]["accuracy"]


def summary_rows(results: dict[str, Any]) -> list[tuple[str, float, float, float]]:
    """``(probe, accuracy %, F1 %, yes-ratio)`` rows for a printed table or the model card."""
    rows = [(f"POPE {s}", results["pope"][s]) for s in POPE_SPLITS]
    rows += [(f"attribute ({s})", results["attribute"][s]) for s in ATTRIBUTE_SPLITS if s in results["attribute"]]
    for split in ATTRIBUTE_SPLITS:
        for kind, metrics in sorted(results.get("attribute_kinds", {}).get(split, {}).items()):
            rows.append((f"attribute ({split}), {'colour' if kind == 'color' else kind} only", metrics))
    rows += [("relation (opposite)", results["relation"])]
    rows += [("counting (general QA)", results["count"])] if "count" in results else []
    return [(name, 100 * m["accuracy"], 100 * m["f1"], m["yes_ratio"]) for name, m in rows]


def prior_rows(results: dict[str, Any]) -> list[tuple[str, int, int, str, str]]:
    """``(probe, false yes, those following the prior, their share, chance share)`` for splits whose metrics count them."""
    rows = []
    for key, label in (("pope", "POPE"), ("attribute", "attribute")):
        for split, m in sorted(results.get(key, {}).items()):
            if not isinstance(m, dict) or not m.get("negatives"):
                continue
            fy, pf = int(m["false_yes"]), int(m["prior_false_yes"])
            share = f"{100 * pf / fy:.1f} %" if fy else "–"
            rows.append((f"{label} {split}", fy, pf, share, f"{100 * m['prior_negatives'] / m['negatives']:.1f} %"))
    return rows


def format_table(results: dict[str, Any]) -> str:
    """A Markdown table of :func:`summary_rows`."""
    lines = ["| probe | accuracy % | F1 % | yes-ratio |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {name} | {acc:.1f} | {f1:.1f} | {yes:.2f} |" for name, acc, f1, yes in summary_rows(results)]
    prior = prior_rows(results)
    if prior:
        lines += ["", "Errors on \"no\" questions that follow the world's prior (object questions: the absent shape co-occurs "
                  "with one present; colour questions: the shape's usual colour). Chance is the prior's share of the "
                  "\"no\" questions:", "",
                  "| probe | false yes | of them following the prior | chance |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {name} | {fy} | {pf} ({share}) | {chance} |" for name, fy, pf, share, chance in prior]
    if "pope_suffix" in results:
        lines += ["", "POPE accuracy % with an instruction suffix appended (`plugins.world.INSTRUCTION_SUFFIXES`):", "",
                  "| suffix | " + " | ".join(POPE_SPLITS) + " |", "| --- |" + " ---: |" * len(POPE_SPLITS)]
        lines += [f"| {name} | " + " | ".join(f"{100 * acc[s]:.1f}" for s in POPE_SPLITS) + " |"
                  for name, acc in results["pope_suffix"].items()]
    if "caption" in results:
        c = results["caption"]
        lines += _figure_table(f"Captions ({int(c['n'])}, {c['mean_words']:.1f} words on average), % of mentions or "
                               "captions:", {k: f"{100 * c[k]:.1f}" for k in CAPTION_FIGURES})
    if "representation" in results:
        r = results["representation"]
        lines += _figure_table("Representation alignment (last LM layer, image vs its caption):",
                               {k: f"{r[k]:.3f}" for k in REPRESENTATION_FIGURES})
    return "\n".join(lines)


def _figure_table(title: str, figures: dict[str, str]) -> list[str]:
    """A titled one-row Markdown table: a column per figure, already formatted."""
    return ["", title, "", "| " + " | ".join(figures) + " |", "|" + " ---: |" * len(figures),
            "| " + " | ".join(figures.values()) + " |"]


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


def context_probe(lm: Any, world: WorldConfig, n_scenes: int = 200) -> dict[str, Any]:
    """How the stage-0 language model answers object questions: from a caption in its context, or from its prior.

    POPE-style questions (3 present + 3 absent objects, random and adversarial negatives) about
    ``n_scenes`` test scenes with at least three objects, asked as
    ``USER: <exact caption> is there a ... ? ASSISTANT:`` and again without the caption; the
    answer is whichever of "yes" and "no" the LM scores higher. An LM that reads its context
    scores near 100 % with the caption; without it, only its prior (object frequencies and
    co-occurrence) can help. An LM that does not read its context makes end-to-end tuning start
    to use the image late (see :mod:`plugins.embedded.train`).
    """
    from plugins.benchmarks.world_data import STATS_SCENES
    from plugins.models.padding import left_pad
    from plugins.models.tokenizer import WordEncoder, build_vocab
    from plugins.world import WorldStats, caption, existence_questions

    enc = WordEncoder(build_vocab(world))
    yes, no = enc.ids(["yes", "no"])
    stats = WorldStats.estimate(world, n=STATS_SCENES, split="train")
    scenes = [s for s in SceneSampler(world).scenes(EVAL_SPLIT, 4 * n_scenes) if len(s.objects) >= 3][:n_scenes]
    out: dict[str, Any] = {"n_scenes": len(scenes)}
    for strategy in ("random", "adversarial"):
        questions = [(s, q) for s in scenes for q in existence_questions(s, world, strategy=strategy, n=6, stats=stats)]
        for with_caption in (True, False):
            rows = [[enc.bos_id] + enc.user_turn((caption(s, world) + " " if with_caption else "") + q.text)
                    for s, q in questions]
            ids, mask = left_pad(rows, enc.pad_id)  # (N, L) each
            with torch.no_grad():
                logits = lm(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0),
                            logits_to_keep=1).logits[:, -1]  # (N, V)
            said_yes = logits[:, yes] > logits[:, no]
            truth = torch.tensor([q.answer == "yes" for _, q in questions])
            key = f"{strategy}_{'caption' if with_caption else 'no_context'}"
            out[key] = round(float((said_yes == truth).float().mean()), 4)
    return out
