"""Models for the experiments: the adapter that runs any LLaVA-style checkpoint, and the embedded tiny LLaVA.

Running a checkpoint (this layer never imports :mod:`plugins.methods`; only :mod:`~plugins.models.zoo`
imports :mod:`plugins.registry`):

* :mod:`plugins.models.adapter` — :class:`LlavaAdapter`: load, encode (left-padded, image-token
  mask), forward, generate with a method's four extension points; :mod:`plugins.models.batch` is
  its torch-free input type;
* :mod:`plugins.models.lookup` — checkpoint lookup in a local directory or the user's Hugging
  Face cache (never downloads), checkpoint hashes, the embedded default's path;
* :mod:`plugins.models.device` — ``auto`` / named devices and dtypes resolved;
* :mod:`plugins.models.compat` — the key/value cache keyword across transformers releases;
* :mod:`plugins.models.cache` — a key/value cache that grows in place;
* :mod:`plugins.models.prefix` — prompt prefixes several rows share, encoded once;
* :mod:`plugins.models.images` — each distinct image of a call processed and encoded once;
* :mod:`plugins.models.hooks` — :class:`ForwardHooks`, hooks that live only inside a ``with`` block;
* :mod:`plugins.models.decoding` — protocols: the search (greedy, sampling, beams), prompt suffix and answer budget;
* :mod:`plugins.models.sampling` — reproducible sampling (Gumbel-max, per-item seeds) for sampling protocols;
* :mod:`plugins.models.noise` — the diffusion noise of VCD and the diagnostics;
* :mod:`plugins.models.detector` — Woodpecker's third model, a world-scene detector (trained by
  :mod:`plugins.trainers.detector`);
* :mod:`plugins.models.zoo` — the registered models (``alignscope list models``).

The embedded tiny LLaVA's parts (its recipe, evaluation and model card are :mod:`plugins.embedded`):

* :mod:`plugins.models.tokenizer` — the world's closed vocabulary as a ``PreTrainedTokenizerFast``
  with a LLaVA-1.5 chat template, a ``CLIPImageProcessor`` and the ``LlavaProcessor`` around both;
* :mod:`plugins.models.tiny_llava` — config builders for the tiny CLIP towers, the tiny Llama and
  the ``LlavaConfig`` (stock transformers classes only, so ``from_pretrained`` needs nothing of ours);
* :mod:`plugins.models.data` — training examples drawn from the world's "train" stream;
* :mod:`plugins.models.padding` — left padding of token rows;
* :mod:`plugins.models.loop` — the training loop shared by the stages and the tuning methods.
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
