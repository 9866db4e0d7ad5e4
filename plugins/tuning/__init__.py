"""Parameter tuning on the synthetic world: preference data, losses, and a trainer for the tuning methods.

The survey's parameter-tuning family changes the model's weights. The methods registered in
:mod:`plugins.methods.tuned` (``dpo``, ``rdpo``, ``hacl``, ``lrv``) build their training data from
the world's tuning stream and the model's own answers (:mod:`plugins.tuning.preferences`,
:mod:`plugins.tuning.instructions`), optimise one of the objectives in
:mod:`plugins.tuning.losses` with :mod:`plugins.tuning.trainer`, and swap the tuned weights in
only while they answer.
"""

SOURCE_MODULES: tuple[str, ...] = (
    "plugins.tuning.preferences", "plugins.tuning.instructions", "plugins.tuning.losses", "plugins.tuning.trainer",
    "plugins.models.data", "plugins.models.train", "plugins.methods.posthoc", "plugins.benchmarks.pope",
)
"""Every module whose code shapes a tuning run (data, objective, loop, answer parsing, the world config base):
a tuned method hashes them into its fingerprint, so editing any of them trains afresh."""
