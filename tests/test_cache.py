"""GrowingCache: the same keys and values as transformers' DynamicCache after every operation, fewer copies."""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from plugins.models.cache import GrowingCache, GrowingLayer, cache_rows
from plugins.models.compat import cache_keyword


def _same(a, b) -> bool:
    return a.keys.shape == b.keys.shape and torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_every_operation_matches_a_dynamic_layer():
    """Appends (small and large enough to reallocate), beam reordering, repeats, selection, crops and
    restoring a saved prefix leave a growing layer equal to a DynamicLayer given the same calls."""
    gen = torch.Generator().manual_seed(0)

    def kv(rows: int, tokens: int):
        return torch.randn(rows, 2, tokens, 4, generator=gen), torch.randn(rows, 2, tokens, 4, generator=gen)

    grow, plain = GrowingLayer(), DynamicLayer()
    for layer in (grow, plain):
        assert layer.get_seq_length() == 0
    steps = [("append", 3, 5), ("repeat", 2), ("append", 6, 1), ("reorder", [5, 5, 0, 1, 2, 3]),
             ("append", 6, 40), ("select", [4, 0, 2]), ("save",), ("append", 3, 5), ("restore",),
             ("append", 3, 1), ("crop", -2), ("append", 3, 2)]
    saved = {}
    for step in steps:
        if step[0] == "append":
            k, v = kv(step[1], step[2])
            out_g, out_p = grow.update(k, v), plain.update(k, v)
            assert all(torch.equal(g, p) for g, p in zip(out_g, out_p)), step
        elif step[0] == "repeat":
            grow.batch_repeat_interleave(step[1]), plain.batch_repeat_interleave(step[1])
        elif step[0] == "reorder":
            grow.reorder_cache(torch.tensor(step[1])), plain.reorder_cache(torch.tensor(step[1]))
        elif step[0] == "select":
            grow.batch_select_indices(torch.tensor(step[1])), plain.batch_select_indices(torch.tensor(step[1]))
        elif step[0] == "save":  # what OPERA does around its candidate pass
            saved = {id(layer): (layer.keys, layer.values) for layer in (grow, plain)}
        elif step[0] == "restore":
            for layer in (grow, plain):
                layer.keys, layer.values = saved[id(layer)]
        elif step[0] == "crop":
            grow.crop(step[1]), plain.crop(step[1])
        assert _same(grow, plain), step
        assert grow.get_seq_length() == plain.get_seq_length()
    assert grow.capacity > grow.get_seq_length()  # room left to append into


def test_appending_within_capacity_and_restoring_a_prefix_copy_nothing():
    layer = GrowingLayer()
    layer.update(torch.ones(2, 1, 10, 4), torch.ones(2, 1, 10, 4))
    buffer = layer.keys.data_ptr()
    kept = layer.keys, layer.values
    layer.update(torch.zeros(2, 1, 5, 4), torch.zeros(2, 1, 5, 4))
    layer.keys, layer.values = kept
    assert layer.get_seq_length() == 10 and layer.keys.data_ptr() == buffer and layer.capacity == 26
    assert torch.equal(layer.keys, torch.ones(2, 1, 10, 4))


def test_a_growing_cache_replaces_only_full_attention_layers(adapter):
    cache = GrowingCache(config=adapter.model.config)
    assert cache.layers and all(type(layer) is GrowingLayer for layer in cache.layers)
    with pytest.raises(ValueError, match="negative number"):
        cache.layers[0].crop(3)


def test_generation_on_a_growing_cache_equals_a_dynamic_cache(adapter):
    """Greedy decoding with the model's own generate: the same tokens and the same final cache."""
    from tests.tiny_llava import random_images
    from plugins.models.batch import Batch

    encoded = adapter.encode(Batch(images=random_images(3, seed=4), prompts=["is there a cat ?", "what color ?",
                                                                            "describe the image ."]))
    outputs = {}
    for name, cache in (("growing", GrowingCache(config=adapter.model.config)), ("dynamic", DynamicCache(config=adapter.model.config))):
        with torch.inference_mode():
            tokens = adapter.model.generate(**encoded.model_inputs(with_position_ids=False), max_new_tokens=12,
                                            do_sample=False, **{cache_keyword(): cache},
                                            pad_token_id=adapter.tokenizer.pad_token_id)
        outputs[name] = (tokens, cache)
    assert torch.equal(outputs["growing"][0], outputs["dynamic"][0])
    for g, d in zip(outputs["growing"][1].layers, outputs["dynamic"][1].layers):
        assert _same(g, d)


def test_cache_rows_copies_the_chosen_rows_and_leaves_the_source_alone(adapter):
    source = GrowingCache(config=adapter.model.config)
    for layer in source.layers:
        layer.update(torch.arange(3 * 2 * 4 * 1.0).view(3, 2, 4, 1), torch.ones(3, 2, 4, 1))
    before = [layer.keys.clone() for layer in source.layers]
    rows = cache_rows(source, torch.tensor([2, 0]), adapter.model.config)
    for layer, original, kept in zip(rows.layers, source.layers, before):
        assert torch.equal(layer.keys, kept[[2, 0]]) and torch.equal(original.keys, kept)
        layer.update(torch.zeros(2, 2, 1, 1), torch.zeros(2, 2, 1, 1))
        assert original.get_seq_length() == 4
