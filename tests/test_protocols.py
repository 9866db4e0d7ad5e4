"""Protocols: sampling made reproducible, suffixes and budgets, protocols as matrix entries and result cells."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from plugins.models.batch import Batch
from plugins.models.decoding import COMMON, Protocol
from plugins.models.sampling import GumbelSampler, nucleus
from plugins.registry import create_method
from tests.runner_fixtures import env, run  # noqa: F401 (env is a fixture)
from tests.tiny_llava import random_images

SAMPLE = Protocol(decoding="sample", temperature=1.0)


@pytest.fixture(scope="module")
def batch():
    return Batch(images=random_images(5, seed=3), prompts=["is there a cat ?", "what color ?", "describe the image .",
                                                           "is the dog left of the cat ?", "what is it ?"],
                 ids=["a", "b", "c", "d", "e"], seed=4)


# ---------------------------------------------------------------- the sampler on hand-made scores

def test_gumbel_max_draws_follow_the_softmax():
    """20,000 draws of one step: token frequencies within 1.5 points of softmax(l / T)."""
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    for temperature in (1.0, 0.5):
        p = torch.softmax(logits[0] / temperature, dim=-1).numpy()
        counts = np.zeros(4)
        for seed in range(20000):
            out = GumbelSampler([seed], temperature, 1.0)(torch.zeros(1, 1, dtype=torch.long), logits)
            counts[int(out.argmax())] += 1
        assert np.abs(counts / counts.sum() - p).max() < 0.015, (temperature, counts / counts.sum(), p)


def test_the_nucleus_and_earlier_cuts_are_never_drawn():
    logits = torch.tensor([[3.0, 2.9, -2.0, float("-inf")]])  # probabilities ~ (0.52, 0.47, 0.003, 0)
    drawn = {int(GumbelSampler([s], 1.0, 0.9)(torch.zeros(1, 1, dtype=torch.long), logits).argmax()) for s in range(2000)}
    assert drawn == {0, 1}
    lp = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    assert torch.isinf(nucleus(lp, 0.5))[0].tolist() == [False, True, True]  # the most likely token always stays
    assert torch.isinf(nucleus(lp, 0.61))[0].tolist() == [False, False, True]


def test_rows_of_extra_streams_get_their_items_noise():
    s = GumbelSampler([1, 2], 1.0, 1.0)
    out = s(torch.zeros(4, 1, dtype=torch.long), torch.zeros(4, 6))
    assert torch.equal(out[0], out[2]) and torch.equal(out[1], out[3]) and not torch.equal(out[0], out[1])
    with pytest.raises(ValueError, match="multiple"):
        GumbelSampler([1, 2], 1.0, 1.0)(torch.zeros(3, 1, dtype=torch.long), torch.zeros(3, 6))


# ---------------------------------------------------------------- through the adapter

def test_sampled_answers_are_reproducible_and_do_not_depend_on_batching(adapter, batch):
    one = adapter.generate(batch, max_new_tokens=6, protocol=SAMPLE, batch_size=1)
    assert one == adapter.generate(batch, max_new_tokens=6, protocol=SAMPLE, batch_size=5)
    assert one == adapter.generate(batch, max_new_tokens=6, protocol=SAMPLE, batch_size=2)
    other_seed = Batch(batch.images, batch.prompts, ids=batch.ids, seed=5)
    assert adapter.generate(other_seed, max_new_tokens=6, protocol=SAMPLE) != one  # a random model: answers vary
    assert adapter.generate(batch, max_new_tokens=6) != one  # sampling is not greedy


def test_a_very_low_temperature_samples_the_greedy_answer(adapter, batch):
    cold = Protocol(decoding="sample", temperature=1e-4)
    assert adapter.generate(batch, max_new_tokens=6, protocol=cold) == adapter.generate(batch, max_new_tokens=6)


def test_sampling_draws_from_the_scores_every_other_processor_left(adapter, batch):
    vcd = create_method("vcd")  # extra streams (the noised image) must follow their item's draw
    sampled = adapter.generate(batch, max_new_tokens=5, method=vcd, protocol=SAMPLE, batch_size=2)
    assert sampled == adapter.generate(batch, max_new_tokens=5, method=vcd, protocol=SAMPLE, batch_size=5)
    word = adapter.tokenizer.convert_tokens_to_ids("cat")

    class OnlyCat:  # a cut like VCD's plausibility cut, taken to the extreme: one token left
        def __call__(self, input_ids, scores):
            keep = torch.full_like(scores, float("-inf"))
            keep[:, word] = scores[:, word]
            return keep

    forced = adapter.generate(batch, max_new_tokens=3, logits_processors=[OnlyCat()], protocol=SAMPLE)
    assert all(answer.split() == ["cat"] * 3 for answer in forced), forced


def test_the_protocol_in_use_is_visible_during_the_call_only(adapter, batch):
    seen = []

    class Spy:
        def __call__(self, input_ids, scores):
            seen.append(adapter.protocol)
            return scores

    adapter.generate(batch[:1], max_new_tokens=1, logits_processors=[Spy()], protocol=SAMPLE)
    assert seen == [SAMPLE] and adapter.protocol == COMMON
    with pytest.raises(TypeError, match="expected a plugins.models.decoding.Protocol"):
        adapter.generate(batch[:1], max_new_tokens=1, protocol={"decoding": "sample"})


def test_a_benchmark_applies_the_suffix_and_the_budget(adapter):
    from plugins.benchmarks.base import Item
    from plugins.registry import get_benchmark

    bench = get_benchmark("world-relation")({"limit": 2})
    asked = []

    class Recorder:
        def generate(self, b, max_new_tokens, method=None, batch_size=8, protocol=None):
            asked.append((list(b.prompts), max_new_tokens, protocol))
            return ["yes"] * len(b)

    items = bench.items("opposite")
    proto = Protocol(suffix="Answer with yes or no.", max_new_tokens=3)
    bench.evaluate(Recorder(), None, "opposite", items, batch_size=8, seed=0, protocol=proto)
    (prompts, budget, used), = asked
    assert all(p.endswith("? Answer with yes or no.") for p in prompts) and budget == 3 and used == proto
    asked.clear()
    bench.evaluate(Recorder(), None, "opposite", items, batch_size=8, seed=0)
    assert not asked[0][0][0].endswith("no.") and asked[0][1] == bench.max_new_tokens and asked[0][2] == COMMON
    assert isinstance(items[0], Item)
    assert bench.decoding(proto) == {"strategy": "greedy", "num_beams": 1, "suffix": "Answer with yes or no.",
                                     "max_new_tokens": 3}
    # A caption instruction takes no short-answer suffix, and its provenance says none was added.
    captions = get_benchmark("world-caption")({"limit": 1})
    assert captions.prompt("describe the image .", proto) == "describe the image ."
    assert captions.decoding(proto)["suffix"] == "" and captions.answer_budget(proto) == 3


# ---------------------------------------------------------------- protocols in the matrix

def _matrix(tmp_path, body: str):
    from plugins.runner.matrix import load_matrix

    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return load_matrix(path)


SAMPLING_EXPERIMENT = """\
protocols:
  sampling: {decoding: sample}
experiments:
  - name: e
    protocols: [common, sampling]
    models: [alignscope-tiny-llava]
    benchmarks: {world-pope: [random]}
"""
"""A matrix whose experiment ``e`` runs under the common and a sampling protocol; its methods and the rest follow."""


def _sampling_matrix(tmp_path, methods: str, rest: str):
    """:data:`SAMPLING_EXPERIMENT` with ``methods`` (a YAML flow mapping), then ``rest`` (YAML text at the file's indentation)."""
    return _matrix(tmp_path, SAMPLING_EXPERIMENT + f"    methods: {methods}\n" + rest)


def test_protocols_expand_into_cells_with_their_own_paths(tmp_path):
    from plugins.runner.matrix import expand_all

    m = _sampling_matrix(tmp_path, "{vcd: {}}", "    seeds: [0, 1]\n")
    cells, problems = expand_all(m)
    assert problems == []
    assert sorted(c.name for c in cells) == [
        "alignscope-tiny-llava/world-pope/random/vcd/sampling/seed0", "alignscope-tiny-llava/world-pope/random/vcd/sampling/seed1",
        "alignscope-tiny-llava/world-pope/random/vcd/seed0", "alignscope-tiny-llava/world-pope/random/vcd/seed1"]
    assert {c.protocol_settings for c in cells if c.protocol == "sampling"} == {Protocol(decoding="sample")}


def test_bad_protocols_are_located(tmp_path):
    from plugins.runner.matrix import RunnerError, expand_all

    m = _matrix(tmp_path, """\
        protocols:
          sampling: {decoding: sample}
        experiments:
          - name: e
            protocols: [common, samplng]
            models: [alignscope-tiny-llava]
            benchmarks: {world-pope: [random], world-diagnostics: [relation]}
            methods: {baseline: {}}
          - name: f
            protocols: [sampling]
            models: [alignscope-tiny-llava]
            benchmarks: {world-representation: [captions]}
            methods: {baseline: {}}
        """)
    cells, problems = expand_all(m)
    assert any(":5: " in p and "unknown protocol 'samplng'; did you mean 'sampling'?" in p for p in problems), problems
    assert any(":12: " in p and "world-representation" in p and "common protocol only, not sampling" in p
               for p in problems), problems
    assert [c.name for c in cells] == ["alignscope-tiny-llava/world-pope/random/baseline/seed0",
                                       "alignscope-tiny-llava/world-diagnostics/relation/baseline/seed0"]
    with pytest.raises(RunnerError, match="decoding: beam"):
        _matrix(tmp_path, """\
            protocols: {wide: {num_beams: 4}}
            experiments: [{name: e, models: [x], benchmarks: {world-pope: null}, methods: {baseline: {}}}]
            """)
    with pytest.raises(RunnerError, match="built in"):
        _matrix(tmp_path, """\
            protocols: {common: {decoding: sample}}
            experiments: [{name: e, models: [x], benchmarks: {world-pope: null}, methods: {baseline: {}}}]
            """)


def test_paper_protocols_must_name_a_protocol_the_method_runs_under(tmp_path):
    from plugins.runner.matrix import expand_all

    m = _sampling_matrix(tmp_path, "{baseline: {}, vcd: {}}", textwrap.dedent("""\
          - name: f
            models: [alignscope-tiny-llava]
            benchmarks: {world-pope: [random]}
            methods: {opera: {}}
        paper_protocols:
          vcd: {protocol: sampling, source: "DAMO-NLP-SG/VCD experiments/cd_scripts/llava1.5_pope.bash"}
          baseline: {protocol: common, source: "LLaVA-1.5"}
          opera: {protocol: sampling, source: "shikiw/OPERA"}
          vdc: {protocol: sampling, source: "x/y"}
          icd: {protocol: beam, source: "x/y"}
        """))
    _, problems = expand_all(m)
    assert m.paper_protocols["vcd"].protocol == "sampling"
    assert any(":16: " in p and "no experiment runs 'opera' under 'sampling'" in p for p in problems), problems
    assert any(":17: " in p and "unknown method label 'vdc'" in p for p in problems), problems
    assert any(":18: " in p and "unknown method label 'icd'" in p for p in problems), problems
    assert len(problems) == 3, problems  # vcd and baseline are fine


def test_a_protocol_changes_the_fingerprint_and_is_recorded(env):
    """A sampling cell runs, is written under its protocol's folder, and says how it decoded."""
    from plugins.api import load_results

    env["matrix"].write_text(textwrap.dedent(f"""\
        protocols:
          sampling: {{decoding: sample, temperature: 0.7, suffix: "Answer with yes or no."}}
        defaults: {{device: cpu, batch_size: 4}}
        experiments:
          - name: e
            protocols: [common, sampling]
            models: [{{name: tiny-random, path: {env["checkpoint"]}}}]
            benchmarks: {{world-relation: {{options: {{limit: 6}}}}}}
            methods: {{baseline: {{}}}}
        """), encoding="utf-8")
    summary = run(env)
    assert not summary.failed and not summary.problems, (summary.failed, summary.problems)
    records, _ = load_results(env["results"])
    by = {r.protocol: r for r in records}
    sampled = by["sampling"]
    assert sampled.cell == "tiny-random/world-relation/opposite/baseline/sampling/seed0"
    assert (env["results"] / f"{sampled.cell}.json").is_file()
    assert sampled.provenance.decoding["strategy"] == "sample" and sampled.provenance.decoding["temperature"] == 0.7
    assert sampled.provenance.decoding["suffix"] == "Answer with yes or no."
    assert sampled.fingerprint != by["common"].fingerprint and by["common"].provenance.decoding["strategy"] == "greedy"
