"""Models for the experiments: the adapter that runs any LLaVA-style checkpoint, and the embedded tiny LLaVA.

* :mod:`plugins.models.llava` — the adapter over Hugging Face LLaVA checkpoints (local directory
  or the user's cache; never downloads); :mod:`plugins.models.batch` is its torch-free input type;
* :mod:`plugins.models.tokenizer` — the world's closed vocabulary as a ``PreTrainedTokenizerFast``
  with a LLaVA-1.5 chat template, a ``CLIPImageProcessor`` and the ``LlavaProcessor`` around both;
* :mod:`plugins.models.tiny_llava` — config builders for the tiny CLIP towers, the tiny Llama and
  the ``LlavaConfig`` (stock transformers classes only, so ``from_pretrained`` needs nothing of ours);
* :mod:`plugins.models.data` — training examples drawn from the world's "train" stream;
* :mod:`plugins.models.train` — the survey's staged recipe (``alignscope train``);
* :mod:`plugins.models.quick_eval` — POPE / attribute / relation accuracy on the "test" stream.
"""

import logging as _logging


class _QuietPilFallback(_logging.Filter):
    """Drop transformers' notice that ``CLIPImageProcessor`` falls back to its PIL backend without torchvision.

    Both backends give the same pixels for our images (a test checks the processor against the
    training path), so on a torchvision-free CPU install the notice is noise in every run.
    """

    def filter(self, record: _logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


_logging.getLogger("transformers.utils.import_utils").addFilter(_QuietPilFallback())
