"""Parameter tuning on the synthetic world: preference data, losses, and a trainer for the tuning methods.

The survey's parameter-tuning family changes the model's weights. The trainers of
:mod:`plugins.trainers.tuned` (for the methods ``dpo``, ``rdpo``, ``hacl``, ``lrv`` and
``world-tune``) build their training data from the world's tuning stream and the model's own
answers (:mod:`plugins.tuning.preferences`, :mod:`plugins.tuning.instructions`), optimise one of
the objectives in :mod:`plugins.tuning.losses` with :mod:`plugins.tuning.trainer`; the methods
swap the tuned weights in only while they answer.
"""
