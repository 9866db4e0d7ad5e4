"""The embedded default model: the tiny LLaVA trained on the synthetic world by the project's own code.

* :mod:`plugins.embedded.train` — the survey's staged recipe (``alignscope train``, ``make train``);
* :mod:`plugins.embedded.quick_eval` — POPE / attribute / relation accuracy and caption figures on
  the world's test stream, for the model card and the training log;
* :mod:`plugins.embedded.card` — the model card written beside the weights.

It sits above the models layer (:mod:`plugins.models`: the adapter, the tiny model's configs, the
tokenizer, the training loop) and the benchmarks it evaluates with.
"""
