"""Training Woodpecker's world detector (:class:`plugins.models.detector.SceneDetector`), apart from its use.

:func:`detector_artifact` is the trainer :mod:`plugins.methods.woodpecker` caches
(:func:`plugins.artifacts.cached_artifact`, kind ``woodpecker-detector``): the weights fitted by
:func:`train_detector` to the world's exact ground truth, with their held-out report
(:func:`evaluate_detector`) and training time. Its cache key is the detector recipe (the
``detector_*`` settings and the world's fingerprint) plus the code of this module's import
closure, so editing how Woodpecker *revises* answers never retrains the detector, and editing how
it is trained always does.

>>> from plugins.world import WorldConfig
>>> sorted(detector_artifact(WorldConfig(), width=1, scenes=2, steps=1, batch=2, lr=1e-3, seed=0, val_scenes=2))
['report', 'state_dict']
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Sequence

from plugins.models.detector import CELL, build_detector, detector_vocab
from plugins.world import WorldConfig, holding_predicates

if TYPE_CHECKING:
    import torch

__all__ = ["detector_artifact", "train_detector", "evaluate_detector", "DETECTOR_SPLIT", "VALIDATION_SPLIT"]

DETECTOR_SPLIT = "train"  # the world's training stream, as the tiny LLaVA's
VALIDATION_SPLIT = "detector-val"  # a scene stream no benchmark or training run uses: the held-out check


def detector_artifact(world: WorldConfig, *, width: int, scenes: int, steps: int, batch: int, lr: float, seed: int,
                      val_scenes: int) -> dict[str, Any]:
    """``{"state_dict", "report"}``: a detector trained by :func:`train_detector`, its held-out report and cost.

    The report is :func:`evaluate_detector` on ``val_scenes`` scenes (at the official threshold
    0.35, whatever a method's ``box_threshold``) plus ``train_seconds``, ``train_cpu_seconds`` and
    ``parameters``.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    net = train_detector(world, width=width, scenes=scenes, steps=steps, batch=batch, lr=lr, seed=seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu  # CPU time too: wall time varies with load
    report = evaluate_detector(net, world, val_scenes)  # at the official 0.35, whatever box_threshold is
    report.update(train_seconds=wall, train_cpu_seconds=cpu, parameters=float(sum(p.numel() for p in net.parameters())))
    return {"state_dict": net.state_dict(), "report": report}


def _targets(scenes: Sequence[Any], world: WorldConfig) -> dict[str, "torch.Tensor"]:
    """Training targets per cell: objectness (N, G, G), labels (N, 3, G, G) (-100 = none), offsets (N, 2, G, G)."""
    import torch

    cats, colors, sizes = detector_vocab(world)
    grid = world.image_size // CELL
    n = len(scenes)
    objectness = torch.zeros(n, grid, grid)
    labels = torch.full((n, 3, grid, grid), -100, dtype=torch.long)
    offsets = torch.zeros(n, 2, grid, grid)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            cx, cy = obj.center
            col, row = min(int(cx // CELL), grid - 1), min(int(cy // CELL), grid - 1)
            objectness[i, row, col] = 1.0
            labels[i, :, row, col] = torch.tensor([cats.index(obj.category), colors.index(obj.color), sizes.index(obj.size)])
            offsets[i, :, row, col] = torch.tensor([cx / CELL - col, cy / CELL - row])
    return {"objectness": objectness, "labels": labels, "offsets": offsets}


def _images(scenes: Sequence[Any], world: WorldConfig) -> "torch.Tensor":
    import torch

    from plugins.world import render_batch

    return torch.from_numpy(render_batch(list(scenes), world)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W) uint8


def train_detector(world: WorldConfig, *, width: int, scenes: int, steps: int, batch: int, lr: float,
                   seed: int) -> "torch.nn.Module":
    """A :class:`~plugins.models.detector.SceneDetector` fitted to scenes ``0 .. scenes-1`` of the world's ``train`` stream.

    Adam with a cosine-decayed learning rate; loss = objectness BCE on every cell + category, colour
    and size cross-entropy + squared offset error on the cells holding an object's centre. Seeded
    (weights and batch order), and the global torch RNG is left as it was.
    """
    import torch
    import torch.nn.functional as F

    from plugins.world import SceneSampler

    sample = list(SceneSampler(world).scenes(DETECTOR_SPLIT, scenes))
    images, target = _images(sample, world), _targets(sample, world)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_detector(world, width)
        order = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            idx = torch.randint(0, len(sample), (batch,), generator=order)  # (b,)
            objectness, category, color, size, offset = net.split(net(images[idx]))
            mask, labels = target["objectness"][idx], target["labels"][idx]  # (b, G, G), (b, 3, G, G)
            loss = (F.binary_cross_entropy_with_logits(objectness, mask)
                    + F.cross_entropy(category, labels[:, 0]) + F.cross_entropy(color, labels[:, 1])
                    + F.cross_entropy(size, labels[:, 2])
                    + ((torch.sigmoid(offset) - target["offsets"][idx]) ** 2).sum(1).mul(mask).sum() / mask.sum().clamp_min(1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def evaluate_detector(net: Any, world: WorldConfig, n: int, box_threshold: float = 0.35) -> dict[str, float]:
    """Held-out accuracy on scenes ``0 .. n-1`` of the ``detector-val`` stream.

    ``presence_accuracy`` over every (scene, category) pair at ``box_threshold`` (``presence_base_rate``:
    always answering "absent"); ``color_accuracy`` / ``size_accuracy`` over present objects (argmax);
    ``center_error_px`` (mean absolute, per axis); ``relation_accuracy``: share of the relations that
    hold in the scenes (both directions, world margin) that the detected centres also give.
    """
    from plugins.world import SceneSampler

    cats, colors, sizes = detector_vocab(world)
    scenes = list(SceneSampler(world).scenes(VALIDATION_SPLIT, n))
    out = net.read(_images(scenes, world))
    hits = pairs = color_hits = size_hits = objects = rel_hits = rels = 0
    center_error = 0.0
    for i, scene in enumerate(scenes):
        present = {o.category: o for o in scene.objects}
        for k, category in enumerate(cats):
            pairs += 1
            hits += (float(out["presence"][i, k]) >= box_threshold) == (category in present)
            obj = present.get(category)
            if obj is not None:
                objects += 1
                color_hits += colors[int(out["color"][i, k].argmax())] == obj.color
                size_hits += sizes[int(out["size"][i, k].argmax())] == obj.size
                center_error += sum(abs(float(out["center"][i, k, a]) - obj.center[a]) for a in (0, 1)) / 2
        for relation in scene.relations(world.relation_margin):
            a, b = cats.index(relation.subject), cats.index(relation.object)
            rels += 1
            rel_hits += relation.predicate in holding_predicates(tuple(out["center"][i, a].tolist()),
                                                                 tuple(out["center"][i, b].tolist()), world.relation_margin)
    n_objects = max(objects, 1)
    return {"presence_accuracy": hits / pairs, "presence_base_rate": 1.0 - objects / pairs,
            "color_accuracy": color_hits / n_objects, "size_accuracy": size_hits / n_objects,
            "center_error_px": center_error / n_objects, "relation_accuracy": rel_hits / max(rels, 1),
            "scenes": float(n), "objects": float(objects)}
