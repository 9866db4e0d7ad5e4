"""Trainers: the code that computes a method's once-per-model artifacts, apart from the code that answers with them.

A trainer is a module-level function, ``trainer(model, ...)`` or ``trainer(world, ...)``, and the
identity root of its artifact: :func:`plugins.artifacts.cached_artifact` keys the result by the
values that decide it and by the normalised syntax trees of every project module the trainer's
module imports (and the adapter's, when it is handed one). Trainers never import
:mod:`plugins.methods`; a method hands them the adapter and its config values. So editing how a
method answers never retrains, and editing how its artifact is trained always does.

* :mod:`plugins.trainers.tuned` — the tuned weights of dpo, rdpo, hacl, lrv and world-tune;
* :mod:`plugins.trainers.directions` — the steering methods' demo set, shared by
  :mod:`plugins.trainers.vti` (VTI's directions) and :mod:`plugins.trainers.ict` (ICT's heads);
* :mod:`plugins.trainers.detector` — Woodpecker's world detector
  (:class:`plugins.models.detector.SceneDetector`).
"""
