"""The embedded tiny LLaVA: tokenizer, processor, checkpoint loading, and the training stages (CPU, seconds)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from plugins.models.data import (
    IGNORE, build_world_data, caption_example, question_example, region_labels, text_examples,
)
from plugins.models.tiny_llava import assemble_llava, build_clip, build_llava, build_lm
from plugins.models.tokenizer import (
    CHAT_TEMPLATE, SPECIAL_TOKENS, WordEncoder, build_processor, build_vocab, num_image_tokens,
    pixel_values,
)
from plugins.models.loop import StageConfig
from plugins.embedded.train import (
    TRAINING_ROOTS, TrainConfig, pretrain_lm, train, train_default, train_vision, tune_end_to_end, tune_projector,
)
from plugins.world import CAPTION_PROMPT, WorldConfig, noisy_caption, vocabulary

WORLD = WorldConfig()
QUICK = TrainConfig.quick()


@pytest.fixture(scope="module")
def processor():
    return build_processor(WORLD, patch_size=QUICK.model.patch_size)


@pytest.fixture(scope="module")
def data():
    return build_world_data(WORLD, n=8)


# ------------------------------------------------------------------ tokenizer and processor


def test_every_vocabulary_word_round_trips(processor):
    tok = processor.tokenizer
    vocab = build_vocab(WORLD)
    assert len(tok) == len(vocab) and tok.get_vocab() == vocab
    for word in vocabulary(WORLD) + ["user", "assistant", ":"]:
        ids = tok(word, add_special_tokens=False).input_ids
        assert ids == [vocab[word]], word
        assert tok.decode(ids) == word
    for special in SPECIAL_TOKENS:
        assert tok.convert_tokens_to_ids(special) == vocab[special]
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    assert tok("a zebra", add_special_tokens=False).input_ids == [vocab["a"], tok.unk_token_id]
    # Case and glued punctuation are normalised the way POPE's questions are written.
    assert tok.tokenize("Is there a Star?") == ["is", "there", "a", "star", "?"]


def test_sentences_round_trip_and_word_encoder_agrees(processor, data):
    tok, enc = processor.tokenizer, WordEncoder(build_vocab(WORLD))
    for text in data.captions:
        ids = tok(text).input_ids
        assert ids == [enc.bos_id] + enc(text)
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_chat_template_is_llava_15(processor):
    question = "is there a star in the image ?"
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}], add_generation_prompt=True)
    assert prompt == f"USER: <image>\n{question} ASSISTANT:"
    convo = processor.apply_chat_template([
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": "yes"}]},
        {"role": "user", "content": "is the star red ?"},
        {"role": "assistant", "content": "no"},
    ])
    assert convo == f"USER: <image>\n{question} ASSISTANT: yes</s>USER: is the star red ? ASSISTANT: no</s>"
    with pytest.raises(Exception, match="role system is not supported"):
        processor.apply_chat_template([{"role": "system", "content": "be brief"}])


def test_training_sequences_match_the_chat_template(processor, data):
    """What training feeds the model is exactly what the template + processor produce at inference."""
    enc = WordEncoder(build_vocab(WORLD))
    n_img = num_image_tokens(WORLD.image_size, QUICK.model.patch_size)
    ex = question_example(data, 0, enc, n_img)
    turns, i, ids, labels = [], 1, ex.input_ids, ex.labels
    while i < len(ids):  # rebuild the conversation from the label mask: answers are the labelled spans
        j = i
        while labels[j] == IGNORE:
            j += 1
        k = j
        while ids[k] != enc.eos_id:
            k += 1
        turns.append((enc.decode([t for t in ids[i:j] if t != enc.image_id][2:-2]), enc.decode(ids[j:k])))
        i = k + 1
    messages = []
    for n, (q, a) in enumerate(turns):
        content = ([{"type": "image"}] if n == 0 else []) + [{"type": "text", "text": q}]
        messages += [{"role": "user", "content": content}, {"role": "assistant", "content": a}]
    text = processor.apply_chat_template(messages)
    out = processor(images=[data.images[0]], text=[text], return_tensors="pt")
    assert out["input_ids"][0].tolist() == ids
    cap = caption_example(data, 1, enc, n_img)
    assert cap.labels.count(IGNORE) == len(cap.labels) - len(data.captions[1].split()) - 1  # caption + </s>
    assert enc.decode(cap.input_ids[3 + n_img:3 + n_img + len(CAPTION_PROMPT.split())]) == CAPTION_PROMPT


def test_image_token_count_and_pixels_match_the_vision_tower(processor, data):
    prompt = "USER: <image>\nis there a star in the image ? ASSISTANT:"
    out = processor(images=[data.images[0]], text=[prompt], return_tensors="pt")
    n_img = int((out["input_ids"] == processor.image_token_id).sum())
    assert n_img == num_image_tokens(64, 8) == (64 // QUICK.model.patch_size) ** 2 == 64
    assert torch.equal(out["pixel_values"], torch.from_numpy(pixel_values(data.images[:1])))
    model = build_llava(QUICK.model, build_vocab(WORLD), WORLD.image_size)
    feats = model.get_image_features(pixel_values=out["pixel_values"]).pooler_output  # list of (n_img, hidden)
    assert feats[0].shape[0] == n_img == model.config.image_seq_length


# ------------------------------------------------------------------ checkpoint


def test_checkpoint_loads_with_plain_transformers(tmp_path, processor, data):
    vocab = build_vocab(WORLD)
    torch.manual_seed(0)
    model = build_llava(QUICK.model, vocab, WORLD.image_size).eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()

    loaded_proc = AutoProcessor.from_pretrained(tmp_path)
    loaded = LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert type(loaded_proc).__name__ == "LlavaProcessor"
    prompt = loaded_proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "is there a star in the image ?"}]}],
        add_generation_prompt=True)
    inputs = loaded_proc(images=[data.images[0], data.images[1]], text=[prompt, prompt], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)
        generated = loaded.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape[0] == 2 and generated.shape[1] <= inputs["input_ids"].shape[1] + 3


# ------------------------------------------------------------------ training


def _overfit_config() -> TrainConfig:
    # 8 scenes and batch 8: every step sees the same examples, so a working stage must lower its loss.
    stage = StageConfig(steps=12, batch_size=8, lr=3e-3, warmup=1)
    return TrainConfig.quick(n_train_scenes=8, lm_pretrain=stage.model_copy(update={"batch_size": 16}),
                             contrastive=stage, projector=stage.model_copy(update={"lr": 1e-2}), end_to_end=stage)


def _lowered(log: dict) -> bool:
    losses = log["losses"]
    return np.mean(losses[-3:]) < np.mean(losses[:3])


def test_micro_training_lowers_every_stage_loss():
    cfg = _overfit_config()
    vocab = build_vocab(cfg.world)
    enc = WordEncoder(vocab)
    data = build_world_data(cfg.world, cfg.n_train_scenes)
    lm, log0 = pretrain_lm(cfg, data, enc, vocab, progress=False)
    clip, log1 = train_vision(cfg, data, enc, vocab, progress=False)
    _, log1s = train_vision(cfg.model_copy(update={"stage1_objective": "supervised-regions"}), data, enc, vocab, progress=False)
    _, log1c = train_vision(cfg.model_copy(update={"stage1_objective": "contrastive-regions"}), data, enc, vocab, progress=False)
    llava = assemble_llava(cfg.model, vocab, cfg.world.image_size, clip, lm, seed=cfg.seed)
    log2 = tune_projector(cfg, llava, data, enc, progress=False)
    log3 = tune_end_to_end(cfg, llava, data, enc, progress=False)
    for log in (log0, log1, log1s, log1c, log2, log3):
        assert len(log["losses"]) == 12 and _lowered(log), (log["name"], log["losses"])


def test_stage2_trains_only_the_projector():
    cfg = _overfit_config()
    vocab = build_vocab(cfg.world)
    enc = WordEncoder(vocab)
    data = build_world_data(cfg.world, cfg.n_train_scenes)
    torch.manual_seed(0)
    llava = assemble_llava(cfg.model, vocab, cfg.world.image_size, build_clip(cfg.model, vocab, 64),
                           build_lm(cfg.model, vocab), seed=0)
    before = {k: v.clone() for k, v in llava.state_dict().items()}
    log = tune_projector(cfg, llava, data, enc, progress=False)
    after = llava.state_dict()
    projector = [k for k in before if "multi_modal_projector" in k]
    frozen = [k for k in before if "multi_modal_projector" not in k]
    assert projector and all(not torch.equal(before[k], after[k]) for k in projector)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert log["trainable_parameters"] == sum(before[k].numel() for k in projector)
    assert all(p.requires_grad for p in llava.parameters())  # unfrozen again for stage 3


def test_train_writes_a_loadable_checkpoint_with_a_model_card(tmp_path):
    from plugins.identity import code_hash
    from plugins.embedded.card import run_summary

    record = train(TrainConfig.quick(), tmp_path, progress=False)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "processor_config.json",
            "tokenizer.json", "README.md", "training_log.json"} <= names
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert record["world_fingerprint"] in card and "stage 3: end-to-end tuning" in card
    assert [len(s["losses"]) for s in record["stages"]] == [4, 4, 4, 4]
    # the run records the identity of the code that trained it, today's code
    env = record["environment"]
    assert env["code_identity"] == code_hash(TRAINING_ROOTS) and f"code identity `{env['code_identity']}`" in card
    assert f"{record['train_seconds']:.0f} s" in card  # the card's figures are the run's own
    assert run_summary(tmp_path).splitlines()[0].startswith("stage 0: LM pre-training")
    LlavaForConditionalGeneration.from_pretrained(tmp_path)


def test_train_default_rejects_a_bad_config_before_training(tmp_path):
    bad = tmp_path / "train.yaml"
    bad.write_text("n_train_scnes: 8\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"config file {bad}: unknown key 'n_train_scnes'; did you mean"):
        train_default(tmp_path / "out", bad, quick=True, progress=False)
    with pytest.raises(ValueError, match="^config lm_pretrain.steps: Input should be greater than or equal to 0$"):
        train_default(tmp_path / "out", {"lm_pretrain": {"steps": -1, "batch_size": 8, "lr": 0.001}}, quick=True)
    with pytest.raises(ValueError, match="cannot be read"):
        train_default(tmp_path / "out", tmp_path / "missing.yaml", quick=True)
    assert not (tmp_path / "out").exists()


def test_the_train_command_reports_a_bad_config_and_exits_2(tmp_path):
    from typer.testing import CliRunner

    from alignscope.cli import app

    bad = tmp_path / "train.yaml"
    bad.write_text("seed: [1\n", encoding="utf-8")  # not YAML
    result = CliRunner().invoke(app, ["train", "--quick", "--out", str(tmp_path / "out"), "--config", str(bad)])
    assert result.exit_code == 2 and f"train: config file {bad}: cannot be read" in result.output
    assert not (tmp_path / "out").exists()


def test_the_committed_checkpoint_records_a_commit_of_this_history():
    """The committed checkpoint's card and log name the commit whose code trained it, and that commit is in history.

    Its recorded ``code_sha256`` hashes the training files as they were then; the code has since been moved
    between modules without changing what it trains, so that hash is not compared with today's code. A new
    training run records today's code identity instead (the test above)."""
    import json

    from plugins.api import git
    from plugins.models.lookup import TINY_LLAVA_CHECKPOINT

    env = json.loads((TINY_LLAVA_CHECKPOINT / "training_log.json").read_text(encoding="utf-8"))["environment"]
    commit = env["git_commit"]
    assert commit and f"commit `{commit}`" in (TINY_LLAVA_CHECKPOINT / "README.md").read_text(encoding="utf-8")
    if git("rev-parse", "--git-dir") is None or (git("rev-parse", "--is-shallow-repository") or "").strip() == "true":
        pytest.skip("no full git history in this checkout")
    assert git("cat-file", "-e", f"{commit}^{{commit}}") is not None, f"commit {commit} is not in this repository"


def test_region_labels_mark_objects_under_patches(data):
    category, colour = region_labels(data, patch_size=8)
    assert category.shape == colour.shape == (8, 64)
    for n, scene in enumerate(data.scenes):
        labelled = {WORLD.categories[c] for c in category[n] if c >= 0}
        assert labelled <= set(scene.categories) and labelled  # only present objects, at least one
        for obj in scene.objects:
            patches = category[n] == WORLD.categories.index(obj.category)
            assert {sorted(WORLD.colors)[c] for c in colour[n][patches]} <= {obj.color}
    assert ((category == -1) == (colour == -1)).all() and (category == -1).mean() > 0.3


def test_instruction_suffixes_tokenize_without_unknown_words(processor, data):
    from plugins.models.data import SUFFIX_TEXTS, question_turns
    from plugins.world import INSTRUCTION_SUFFIXES

    tok = processor.tokenizer
    for suffix in INSTRUCTION_SUFFIXES.values():  # as protocols write them: capitals, glued full stop
        assert tok.unk_token_id not in tok("USER: <image>\nIs there a star in the image?\n" + suffix).input_ids
    rng = np.random.default_rng(0)
    turns = [q for i in range(len(data.scenes))
             for q, _ in question_turns(data.scenes[i], WORLD, 4, 2, 2, rng, n_size=2, suffix_prob=0.5)]
    with_suffix = [q for q in turns if q.endswith(SUFFIX_TEXTS)]
    assert 0.3 < len(with_suffix) / len(turns) < 0.7 and all(q.split("?")[0] for q in with_suffix)
    assert any(q.split()[-2] in WORLD.sizes for q in turns)  # size questions are asked too


def test_text_examples_carry_context_and_answers(data):
    enc = WordEncoder(build_vocab(WORLD))
    examples = text_examples(data, 0, enc, no_context_prob=0.0, n_object=4, n_attribute=1, n_relation=0)
    assert all(e.image is None and enc.image_id not in e.input_ids for e in examples)
    caption_ids = enc(noisy_caption(data.scenes[0], WORLD).text)
    assert examples[0].input_ids[-len(caption_ids) - 1:-1] == caption_ids  # the caption example answers with it
    assert len(examples) == 1 + 5  # then one example per question: a single turn each, the caption as context
    for e in examples[1:]:
        answer = [enc.decode([t]) for t, lab in zip(e.input_ids, e.labels) if lab != IGNORE]
        assert answer in (["yes", "</s>"], ["no", "</s>"])
        start = e.input_ids.index(enc.ids(["user", ":"])[1]) + 1
        assert e.input_ids[start:start + len(caption_ids)] == caption_ids
    alone = text_examples(data, 0, enc, no_context_prob=1.0, n_object=4, n_attribute=1, n_relation=0, max_questions=2)
    assert len(alone) == 3  # the same questions, without the caption: the prior only
    assert [len(e.input_ids) for e in alone[1:]] == [len(e.input_ids) - len(caption_ids) for e in examples[1:3]]
    assert CHAT_TEMPLATE  # the same template is saved with every processor


def test_quick_eval_scores_a_checkpoint(processor, tmp_path):
    from plugins.embedded.quick_eval import evaluate, format_table, presence_probe

    torch.manual_seed(0)
    model = build_llava(QUICK.model, build_vocab(WORLD), WORLD.image_size).eval()
    results = evaluate(model, processor, WORLD, limit=12, data_dir=tmp_path, progress=False, extras=True)
    assert set(results["pope"]) == {"random", "popular", "adversarial"}
    assert results["caption"]["n"] == 12 and 0 <= results["caption"]["chair_i"] <= 1
    assert -1 <= results["representation"]["cosine_margin_last"] <= 1
    assert results["n_questions"] == 12 * 8  # yes/no questions only: 3 POPE, 3 attribute, 1 relation, 1 counting split
    assert 0 <= results["count"]["accuracy"] <= 1 and "| counting (general QA) |" in format_table(results)
    assert set(results["attribute"]) == {"random", "adversarial", "prior"}
    m = results["pope"]["random"]
    assert m["n"] == 12 and m["tp"] + m["fn"] == 6  # the first two POPE images: 3 yes + 3 no each
    assert set(results["attribute_kinds"]["random"]) == {"color", "size"}  # colour and size scored apart too
    assert set(results["pope_suffix"]) == {"none", "lmms-eval", "vcd", "yes-no"}
    table = format_table(results)
    assert "| POPE adversarial |" in table and "| chair_s |" in table and "| mutual_knn_last |" in table
    assert "| lmms-eval |" in table and "size only" in table
    probe = presence_probe(model.model.vision_tower, WORLD, layer=-2, n_train=40, n_test=20, steps=5)
    assert 0 <= probe["accuracy"] <= 1


def test_context_probe_tells_reading_from_prior():
    """An oracle that answers "yes" exactly when the asked category appears earlier in its input scores 100 %
    with the caption in the prompt and 50 % without it (it then always says "no")."""
    from types import SimpleNamespace

    from plugins.embedded.quick_eval import context_probe

    enc = WordEncoder(build_vocab(WORLD))
    yes, no, there = enc.ids(["yes", "no", "there"])

    class Oracle(torch.nn.Module):
        def forward(self, input_ids, attention_mask, position_ids, logits_to_keep):
            logits = torch.zeros(len(input_ids), 1, len(enc.vocab))
            for row, (ids, mask) in enumerate(zip(input_ids.tolist(), attention_mask.tolist())):
                ids = [t for t, m in zip(ids, mask) if m]  # left padding removed
                at = len(ids) - 1 - ids[::-1].index(there)  # "... is there a <category> in the image ?"
                logits[row, 0, yes if ids[at + 2] in ids[:at] else no] = 1.0
            return SimpleNamespace(logits=logits)

    probe = context_probe(Oracle(), WORLD, n_scenes=10)
    assert probe["n_scenes"] == 10
    assert probe["random_caption"] == probe["adversarial_caption"] == 1.0
    assert probe["random_no_context"] == probe["adversarial_no_context"] == 0.5
