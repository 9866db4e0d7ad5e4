"""The model card (``README.md``) of a checkpoint the project trains: what it is, how it was trained, what it scores.

:func:`model_card` renders the training record that :func:`plugins.embedded.train.train` also saves
as ``training_log.json``; every figure in the card comes from that record, written by the run
itself. Records of older runs (a ``code_sha256`` of whole files instead of a ``code_identity``)
render as they did. :func:`run_summary` is what ``alignscope train`` prints at the end of a run.

>>> import json, tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> stage = {"name": "stage 0: LM pre-training (text only)", "steps": 4, "loss_first10": 5.1, "loss_last10": 4.2,
...          "seconds": 1.2}
>>> log = {"stages": [stage], "train_seconds": 3.4, "metrics": None}
>>> _ = (folder / "training_log.json").write_text(json.dumps(log))
>>> print(run_summary(folder).splitlines()[0])
stage 0: LM pre-training (text only): 4 steps, loss 5.1 -> 4.2, 1 s
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["model_card", "run_summary"]


def model_card(record: dict[str, Any]) -> str:
    """The checkpoint's README.md: what it is, how it was trained, what it scores."""
    from plugins.embedded.quick_eval import format_table

    cfg, params = record["config"], record["parameters"]
    stage_rows = "\n".join(
        f"| {s['name']} | {s['steps']} | {s['batch_size']} | {s['lr']:g} | {s['trainable_parameters']:,} | "
        f"{s['loss_first10']} → {s['loss_last10']} | {s['seconds']:.0f} |" for s in record["stages"])
    metrics = record["metrics"]
    results = format_table(metrics) if metrics else "(not evaluated)"
    probe = record["stages"][1].get("grounding_probe")
    grounding = (f"Grounding after stage 1 ({record['stages'][1]['objective']}): a linear probe on the mean of the "
                 f"patch tokens the LLaVA reads predicts which categories are present with {100 * probe['accuracy']:.1f} % "
                 f"accuracy on test scenes (always-absent baseline {100 * probe['base_rate']:.1f} %). The survey's stage 1 "
                 "is contrastive; the contrastive objectives (`stage1_objective`) were measured and grounded less well "
                 "within the CPU budget — numbers in `plugins/embedded/train.py`, `train_vision`." if probe else "")
    reading = record["stages"][0].get("context_probe")
    if reading:
        grounding = (f"Context reading after stage 0: asked about test scenes with their exact caption in the prompt, the "
                     f"text-only LM answers object questions with {100 * reading['random_caption']:.1f} % accuracy "
                     f"({100 * reading['adversarial_caption']:.1f} % on adversarial negatives); without the caption, from its "
                     f"prior alone, {100 * reading['random_no_context']:.1f} % ({100 * reading['adversarial_no_context']:.1f} %). "
                     "Whether it reads its context decides how soon stage 3 starts to use the image (see the "
                     "site page *Embedded model: history*).\n\n" + grounding)
    env = record["environment"]
    code_note = ""
    if "code_identity" in env:
        roots = ", ".join(f"`{m}`" for m in env["code_identity_roots"])
        code_note = (" (the training code had uncommitted changes)" if env["code_dirty"] else "") + \
            (f"; code identity `{env['code_identity']}` (`plugins.identity.code_hash`: the normalised syntax trees of "
             f"{roots} and every project module it imports, evaluation included)")
    elif "code_sha256" in env:  # a record written before code identities
        code_note = (" (the training code had uncommitted changes)" if env["code_dirty"] else "") + \
            f"; training code SHA-256 `{env['code_sha256']}` (`plugins.embedded.train.training_code()`)"
    world_json = json.dumps(cfg["world"], indent=1, sort_keys=True)
    rest = {k: v for k, v in cfg.items() if k != "world"}
    return f"""---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [llava, alignscope, synthetic]
---

# AlignScope tiny LLaVA

A {params['total'] / 1e6:.2f} M-parameter `LlavaForConditionalGeneration` (tiny CLIP ViT + MLP projector + tiny
Llama) trained by AlignScope's own code on its synthetic scene world (`plugins/world/`), following the
three training stages of the survey's Appendix A.1 after a text-only language pre-training. It exists so
that hallucination-mitigation methods can be run and measured on a laptop CPU with no downloads.

```python
from transformers import AutoProcessor, LlavaForConditionalGeneration
processor = AutoProcessor.from_pretrained("plugins/models/checkpoints/alignscope-tiny-llava")
model = LlavaForConditionalGeneration.from_pretrained("plugins/models/checkpoints/alignscope-tiny-llava")
# images: (64, 64, 3) uint8 arrays from plugins.world.render; prompts: LLaVA-1.5's format
prompt = processor.apply_chat_template(
    [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "is there a star in the image ?"}}]}}],
    add_generation_prompt=True)
```

Rebuild: `alignscope train` (`--out <dir>` for another folder).

## Parameters

| part | parameters |
| --- | ---: |
| vision tower (CLIP ViT) | {params['vision_tower']:,} |
| projector (2-layer MLP) | {params['projector']:,} |
| language model (Llama) | {params['language_model']:,} |
| **total** | **{params['total']:,}** |
| stage-1 text encoder (not in the checkpoint) | {params['clip_text_encoder']:,} |

## Training

Per-stage wall time with {record['environment']['threads']} threads (`torch.set_num_threads`); total
{record['train_seconds']:.0f} s including data generation ({record['train_data']['seconds']:.0f} s).

| stage | steps | batch | peak lr | trainable | loss (first 10 → last 10) | seconds |
| --- | ---: | ---: | ---: | ---: | --- | ---: |
{stage_rows}

Training data: scenes 0..{record['train_data']['n_scenes'] - 1} of the world's `train` stream;
images + captions SHA-256 `{record['train_data']['sha256']}`.
World config fingerprint (`WorldConfig.fingerprint()`): `{record['world_fingerprint']}`.

## Results

{'The world benchmarks of `alignscope reproduce` (test set ' + metrics['test_set'] + ', held-out `test` scenes; ' + str(metrics['n_questions']) + ' questions), greedy decoding, official POPE parser (`pope-official-v1`): the same numbers as the baseline rows on the site.' if metrics else ''}

{results}

{grounding}

For comparison, LLaVA-1.5-7B on POPE (COCO): 88.4 / 84.8 / 77.9 % accuracy (random / popular / adversarial).

## Config

Training (`plugins.embedded.train.TrainConfig`):

```json
{json.dumps(rest, indent=1, sort_keys=True)}
```

World (`plugins.world.WorldConfig`):

```json
{world_json}
```

Environment: torch {record['environment']['torch']}, transformers {record['environment']['transformers']},
Python {record['environment']['python']}, commit `{record['environment']['git_commit']}`{code_note}.
Loss curves: `training_log.json`.
"""


def run_summary(folder: Path) -> str:
    """What ``alignscope train`` prints when a run has finished: per-stage steps, losses and seconds, and the scores."""
    record = json.loads((Path(folder) / "training_log.json").read_text(encoding="utf-8"))
    lines = [f"{s['name']}: {s['steps']} steps, loss {s['loss_first10']} -> {s['loss_last10']}, {s['seconds']:.0f} s"
             for s in record["stages"]]
    lines.append(f"total {record['train_seconds']:.0f} s; wrote {folder}")
    if record["metrics"]:
        from plugins.embedded.quick_eval import format_table

        lines.append(format_table(record["metrics"]))
    return "\n".join(lines)
