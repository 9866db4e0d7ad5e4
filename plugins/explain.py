"""``alignscope explain``: the diagnostics of :mod:`plugins.diagnostics` on a benchmark split or one question.

:func:`explain` loads the questions (a registered yes/no benchmark, or one image and question),
runs :func:`plugins.diagnostics.diagnose` with a method applied, summarises the rows and, on the
world's benchmarks, adds image–caption alignment per layer; :func:`format_report` prints it.

>>> level_of("world-pope", "adversarial"), level_of("world-diagnostics", "relation"), level_of("x", "y")
('object', 'relation', None)
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from plugins.diagnostics import CONDITIONS, DiagnosticsError, diagnose, summarize
from plugins.models.batch import Batch

if TYPE_CHECKING:
    from plugins.methods.base import Method
    from plugins.models.adapter import LlavaAdapter

__all__ = ["level_of", "load_model", "explain", "format_report"]


def level_of(benchmark: str, split: str) -> Optional[str]:
    """The misalignment level a benchmark split probes (object, attribute, relation), if known."""
    from plugins.benchmarks.diagnostics import LEVELS

    if benchmark == "world-diagnostics":
        return LEVELS.get(split)
    return {"pope": "object", "world-pope": "object", "world-attribute": "attribute",
            "world-relation": "relation"}.get(benchmark)


def load_model(model: str, device: str = "auto", dtype: str = "auto") -> "LlavaAdapter":
    """A registered model name (``alignscope list models``) or a checkpoint directory / HF cache id."""
    from plugins.models.adapter import LlavaAdapter
    from plugins.registry import get_model, list_models

    if model in list_models():
        return get_model(model)(device=device, dtype=dtype)
    return LlavaAdapter.load(model, device, dtype)


def explain(adapter: "LlavaAdapter", *, method: Optional["Method"] = None, benchmark: Optional[str] = None,
            split: Optional[str] = None, limit: Optional[int] = 200, image: Any = None, question: Optional[str] = None,
            label: Optional[str] = None, batch_size: int = 64, seed: int = 0,
            progress: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """The report behind ``alignscope explain``: rows, their summary and (on world benchmarks) alignment per layer.

    Either a registered yes/no ``benchmark`` and ``split`` (first ``limit`` questions), or one
    ``image`` (path or array) with a ``question`` (and optionally its ``label``).
    """
    from plugins.benchmarks.base import load_image
    from plugins.models.batch import to_rgb_array

    report: dict[str, Any] = {"method": getattr(method, "name", "") or "baseline"}
    if question is not None:
        if image is None:
            raise DiagnosticsError("--question needs --image: visual dependence compares the real image with references")
        picture = load_image(image) if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__") else to_rgb_array(image)
        if label is not None and label not in ("yes", "no"):
            raise DiagnosticsError(f"label is {label!r}, expected yes or no")
        batch, labels = Batch([picture], [question], ["0"], seed), [label]
        report.update(source="one question", level=None)
        items = None
    else:
        from plugins.registry import get_benchmark

        if benchmark is None or split is None:
            raise DiagnosticsError("give a benchmark and split (e.g. world-pope adversarial), or --image with --question")
        bench = get_benchmark(benchmark)({"limit": limit})
        bench.prepare()
        items = bench.items(split)
        if any(i.label not in ("yes", "no") for i in items):
            raise DiagnosticsError(f"benchmark {benchmark!r} split {split!r} has items without a yes/no label; the "
                                   "diagnostics read yes/no questions (world-pope, world-attribute, world-relation, pope)")
        images = {p: load_image(p) for p in dict.fromkeys(i.image for i in items if i.image is not None)}
        batch = Batch([images[i.image] if i.image is not None else None for i in items], [i.prompt for i in items],
                      [i.id for i in items], seed)
        labels = [i.label for i in items]
        report.update(source=f"{benchmark}/{split}", level=level_of(benchmark, split))
    rows = diagnose(adapter, batch, labels, method, batch_size=batch_size, progress=progress)
    for row, text in zip(rows, batch.prompts):
        row["text"] = text
    report.update(rows=rows, summary=summarize(rows))
    if items is not None and benchmark is not None and benchmark.startswith("world-"):
        report["representation"] = _world_alignment(adapter, items, method, batch_size, seed)
    return report


def _world_alignment(adapter: "LlavaAdapter", items: Sequence[Any], method: Optional["Method"], batch_size: int,
                     seed: int) -> Optional[dict[str, Any]]:
    """Alignment per layer of the distinct images among ``items`` with their exact captions (None if too few)."""
    from plugins.benchmarks.base import load_image
    from plugins.benchmarks.representation import alignment_profile
    from plugins.benchmarks.world_data import load_test_set
    from plugins.world import CAPTION_PROMPT, WorldConfig, caption

    world = WorldConfig()
    scenes = load_test_set(world).scenes()
    names = list(dict.fromkeys(i.meta.get("image") for i in items if i.meta.get("image") in scenes))
    paths = {i.meta["image"]: i.image for i in items if i.meta.get("image") in scenes}
    k = min(10, len(names) - 1)
    if k < 2:
        return None
    images = [load_image(paths[n]) for n in names]
    captions = [caption(scenes[n], world) for n in names]
    hooks = method.hooks(adapter, Batch(images, [CAPTION_PROMPT] * len(images), names, seed)) if method is not None \
        else contextlib.nullcontext()
    with hooks:
        return alignment_profile(adapter, images, captions, k=k, batch_size=batch_size)


def format_report(report: dict[str, Any], model: str = "") -> str:
    """``alignscope explain``'s text: the summary table, per-layer readings and, for one question, its row."""
    s = report["summary"]
    lines = [f"{model + ' · ' if model else ''}{report['source']} · method {report['method']} · "
             f"{int(s['n_items'])} question{'s' if s['n_items'] != 1 else ''}"
             + (f" · level {report['level']}" if report.get("level") else "")]
    if "accuracy" in s:
        lines.append(f"accuracy {100 * s['accuracy']:.1f} % ({int(s['n_correct'])} correct, "
                     f"{int(s['n_hallucinated'])} hallucinated)")
    if len(report["rows"]) == 1:
        row = report["rows"][0]
        lines.append(f"question: {row['text']}  answer: {row['answer']!r}"
                     + (f"  label: {row['label']}" if row["label"] else ""))
    lines += ["", "visual dependence, nats: log p(answer | image) - log p(answer | reference)",
              f"  {'reference':<10}{'all':>8}{'correct':>10}{'halluc.':>10}"]
    for c in CONDITIONS:
        cells = [s.get(f"vd_{c}{g}") for g in ("", "_correct", "_hallucinated")]
        lines.append(f"  {c:<10}" + "".join(f"{'-' if v is None else f'{v:.3f}':>{w}}" for v, w in zip(cells, (8, 10, 10))))
    layers = len([k for k in s if k.startswith("image_attention_l")])
    lines += ["", "per layer (L0 = embeddings; Lk = after decoder layer k)", "  " + " " * 24 + "".join(f"{f'L{k}':>8}" for k in range(layers + 1))]
    lines.append(f"  {'image attention share':<24}{'':>8}" + "".join(f"{s[f'image_attention_l{k}']:>8.3f}" for k in range(layers)))
    lines.append(f"  {'lens log p(answer)':<24}" + "".join(f"{s[f'lens_logp_l{k}']:>8.2f}" for k in range(layers + 1)))
    lines.append(f"  {'lens answer on top (%)':<24}" + "".join(f"{100 * s[f'lens_top1_l{k}']:>8.0f}" for k in range(layers + 1)))
    rep = report.get("representation")
    if rep:
        lines += ["", f"image-caption alignment per layer ({rep['n']} images, k={rep['k']})",
                  "  " + " " * 24 + "".join(f"{f'L{layer}':>8}" for layer in rep["layers"])]
        for name in ("cosine_margin", "mutual_knn", "linear_cka"):
            lines.append(f"  {name:<24}" + "".join(f"{v:>8.3f}" for v in rep[name]))
    return "\n".join(lines)
