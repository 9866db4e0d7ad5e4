"""POPE: question-file format, the pinned official parser, clarity, metrics, and the shipped fixture.

Parser expectations were checked by running the official ``evaluate.py`` (RUCAIBox/POPE) on each
answer; see ``scripts/crosscheck_pope.py``. Only ``tests/fixtures/pope/`` is read.
"""
from __future__ import annotations

import doctest
import importlib.util
import struct
import zlib
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from plugins.api import ResultRecord
from plugins.benchmarks import pope
from plugins.benchmarks.pope import PARSER_NAME, answer_clarity, parse_pope_answer, pope_metrics
from plugins.benchmarks.pope_files import (POPE_SPLITS, PopeFormatError, PopeQuestion, find_pope_split_files,
                                           load_pope_questions, load_pope_split, load_pope_splits, write_pope_questions)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pope"
IMAGES = FIXTURE / "images"


def load_fixture_builder():
    spec = importlib.util.spec_from_file_location("pope_make_fixture", FIXTURE / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_png(path: Path) -> tuple[int, int, bytes]:
    """(width, height, raw scanlines) of a PNG, checking signature and chunk CRCs."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(tag + body), f"{path.name}: bad CRC in {tag!r}"
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour_type, *_ = header
    assert (depth, colour_type) == (8, 2)  # 8-bit RGB
    return width, height, zlib.decompress(idat)


# ---------------------------------------------------------------- parser

# (answer, official parse, clarity): every parse verified against the official evaluate.py.
PARSER_CASES = [
    ("Yes.", "yes", "yes"),
    ("No, there is not.", "no", "no"),
    ("There is no dog.", "no", "no"),
    ("I don't know", "yes", "unclear"),  # quirk: no "no"/"not" word, so yes
    ("I don't know.", "yes", "unclear"),
    ("yes and no", "no", "unclear"),  # contains the word "no"
    ("", "yes", "unclear"),  # quirk: empty answer is yes
    ("NO", "yes", "no"),  # quirk: words are case-sensitive
    ("Not really.", "yes", "no"),  # quirk: "Not" is not in the list, only "not"
    ("Nope", "yes", "no"),
    ("no\n", "yes", "no"),  # quirk: split on single spaces, so the word is "no\n"
    ("no!", "yes", "no"),
    ("Yes. No.", "yes", "unclear"),  # only the first sentence counts
    ("There is a dog in the image. No cat.", "yes", "no"),
    ("Yes, no.", "no", "unclear"),  # commas are dropped, "no" is a word
    ("no,", "no", "no"),
    ("No\tthere is not", "no", "no"),
    ("I'm not sure.", "no", "unclear"),
    ("Yes, there is a dog in the image.", "yes", "yes"),
    ("There is a dog in the image.", "yes", "unclear"),  # no explicit yes/no word
    ("I cannot tell from this image.", "yes", "unclear"),
    ("Maybe.", "yes", "unclear"),
    ("I don\u2019t see a dog.", "yes", "no"),
]


@pytest.mark.parametrize("answer, parsed, clarity", PARSER_CASES)
def test_official_parser_and_clarity(answer, parsed, clarity):
    assert parse_pope_answer(answer) == parsed
    assert answer_clarity(answer) == clarity


def test_parser_is_pinned_and_rejects_non_strings():
    assert PARSER_NAME == "pope-official-v1"
    with pytest.raises(TypeError, match="expected the model's answer as a string"):
        parse_pope_answer(None)
    with pytest.raises(TypeError):
        answer_clarity(1)


# ---------------------------------------------------------------- metrics

def test_metrics_match_a_hand_computed_confusion_matrix():
    # label: yes yes yes yes  yes   no   no    no     no   no
    answers = ["Yes.", "yes", "NO", "No.", "There is no dog.", "Yes", "No", "No, there is not.", "", "no"]
    labels = ["yes"] * 5 + ["no"] * 5
    # parsed: yes  yes  yes(quirk) no  no  | yes  no  no  yes(quirk)  no
    m = pope_metrics(answers, labels)
    assert (m["tp"], m["fn"], m["fp"], m["tn"], m["n"]) == (3, 2, 2, 3, 10)
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(3 / 5)
    assert m["yes_ratio"] == pytest.approx(5 / 10)
    assert (m["unclear"], m["unclear_ratio"]) == (1, pytest.approx(1 / 10))  # the empty answer
    assert m["misparsed"] == 1  # "NO": a clear no the official rule reads as yes


def test_metrics_f1_differs_from_precision_and_recall():
    labels = ["yes", "yes", "yes", "yes", "yes", "no", "no", "no", "no", "no"]
    preds = ["yes", "yes", "yes", "no", "no", "yes", "no", "no", "no", "no"]  # tp 3, fn 2, fp 1, tn 4
    m = pope_metrics(preds, labels)
    assert (m["accuracy"], m["precision"], m["recall"], m["yes_ratio"]) == (0.7, 0.75, 0.6, 0.4)
    assert m["f1"] == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))  # = 2/3


def test_yes_ratio_counts_predictions_not_labels():
    m = pope_metrics(["No"] * 4, ["yes", "yes", "yes", "no"])
    assert m["yes_ratio"] == 0.0  # lmms-eval's label-based yes-ratio would say 0.75


def test_zero_division_is_zero():
    no_yes_predictions = pope_metrics(["No", "No"], ["yes", "no"])
    assert (no_yes_predictions["precision"], no_yes_predictions["recall"], no_yes_predictions["f1"]) == (0.0, 0.0, 0.0)
    no_yes_labels = pope_metrics(["Yes", "No"], ["no", "no"])
    assert (no_yes_labels["precision"], no_yes_labels["recall"], no_yes_labels["f1"]) == (0.0, 0.0, 0.0)
    all_right_no = pope_metrics(["No", "No"], ["no", "no"])
    assert (all_right_no["accuracy"], all_right_no["precision"], all_right_no["f1"]) == (1.0, 0.0, 0.0)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="2 predictions but 1 labels"):
        pope_metrics(["yes", "no"], ["yes"])
    with pytest.raises(ValueError, match="no predictions"):
        pope_metrics([], [])
    with pytest.raises(ValueError, match=r"labels\[1\] = 'Yes'.*expected \"yes\" or \"no\""):
        pope_metrics(["yes", "yes"], ["yes", "Yes"])
    with pytest.raises(TypeError, match="single strings"):
        pope_metrics("yes", "yes")


def test_metrics_fit_the_result_record():
    m = pope_metrics(["Yes", "No", "I don't know"], ["yes", "no", "no"])
    assert all(0.0 <= m[k] <= 1.0 for k in ("accuracy", "precision", "recall", "f1", "yes_ratio", "unclear_ratio"))
    ResultRecord.model_validate({
        "method": "baseline", "benchmark": "pope", "split": "random", "model": "m", "seed": 0, "n_samples": m["n"],
        "metrics": m, "seconds_per_input": 0.0, "fingerprint": "ab" * 8,
        "provenance": {"git_commit": "unknown", "dirty": False, "package_versions": {}, "device": "cpu",
                       "dtype": "float32", "decoding": {}, "parser": PARSER_NAME, "date": "2026-01-01"}})


# ---------------------------------------------------------------- loader and writer

def test_fixture_loads_like_pope():
    splits = load_pope_splits(FIXTURE, image_dir=IMAGES)
    assert list(splits) == list(POPE_SPLITS)
    for split in splits.values():
        assert split.question_file.name == f"coco_pope_{split.name}.json"
        assert len(split.questions) == 18 and split.images == ("fixture_000001.png", "fixture_000002.png", "fixture_000003.png")
        for image in split.images:
            labels = [q.label for q in split.questions if q.image == image]
            assert labels == ["yes", "no"] * 3  # 3 positives + 3 negatives, interleaved as in the official files
        assert split.image_path(split.questions[0]).is_file()
    # negatives differ between samplers, as they should
    negatives = {name: [q.text for q in s.questions if q.label == "no"] for name, s in splits.items()}
    assert len({tuple(v) for v in negatives.values()}) == 3


def test_question_fields_and_frozen():
    q = load_pope_questions(FIXTURE / "coco_pope_random.json")[0]
    assert q == PopeQuestion(1, "fixture_000001.png", "Is there a square in the image?", "yes")
    with pytest.raises(FrozenInstanceError):
        q.label = "no"
    with pytest.raises(ValueError, match="label is 'Yes', expected \"yes\" or \"no\""):
        PopeQuestion(1, "a.png", "Is there a cat?", "Yes")


def test_loader_collects_every_error_with_its_line(tmp_path):
    path = tmp_path / "coco_pope_random.json"
    path.write_text("\n".join([
        '{"question_id": 1, "image": "a.jpg", "text": "Is there a cat in the image?", "label": "yes"}',
        '{"question_id": 2, "image": "a.jpg", "text": "Is there a dog in the image?", "label": "no"',  # bad JSON
        '{"question_id": 3, "image": "a.jpg", "label": "yes"}',  # missing text
        '{"question_id": 4, "image": "a.jpg", "text": "Is there a cup in the image?", "label": "Yes"}',
        '{"question_id": 1, "image": "a.jpg", "text": "Is there a car in the image?", "label": "no"}',  # duplicate id
        '{"question_id": 6, "image": "a.jpg", "text": "Is there a bus in the image?", "lable": "no"}',
        '["not", "an", "object"]',
        '{"question_id": "8", "image": "../etc/passwd", "text": "x", "label": "no"}',
        '{"question_id": 9, "image": "a.jpg", "text": "t", "label": "no", "label": "yes"}',
    ]) + "\n", encoding="utf-8")
    with pytest.raises(PopeFormatError) as info:
        load_pope_questions(path)
    errors = info.value.errors
    # json's own wording may change between Python versions; the location and the expectation may not.
    assert errors[0].startswith(f"{path}:2: not valid JSON (") and errors[0].endswith(
        "at column 91), expected one JSON object per line")
    assert errors[1:] == [
        f"{path}:3: missing key 'text', expected keys question_id, image, text, label",
        f"{path}:4: label is 'Yes', expected \"yes\" or \"no\"",
        f"{path}:5: question_id 1 already used on line 1, expected unique ids",
        f"{path}:6: missing key 'label', expected keys question_id, image, text, label",
        f"{path}:6: unknown key 'lable' (did you mean 'label'?), expected only question_id, image, text, label",
        f"{path}:7: a JSON list, expected one JSON object per line",
        f"{path}:8: question_id is '8', expected an integer",
        f"{path}:8: image is '../etc/passwd', expected a file name relative to the image folder",
        f"{path}:9: key 'label' appears twice, expected each key once",
    ]
    assert str(info.value).startswith("10 problem(s) in POPE input:\n  ")


@pytest.mark.parametrize("content, message", [
    (b"", "no questions, expected one JSON object per line"),
    (b"\n\n", "no questions"),
    (b"\xff\xfe{}", "is not UTF-8"),
])
def test_loader_rejects_empty_and_undecodable_files(tmp_path, content, message):
    path = tmp_path / "q.jsonl"
    path.write_bytes(content)
    with pytest.raises(PopeFormatError, match=message):
        load_pope_questions(path)


def test_loader_names_a_missing_file(tmp_path):
    with pytest.raises(PopeFormatError, match=r"nope\.jsonl: cannot read"):
        load_pope_questions(tmp_path / "nope.jsonl")


def test_loader_accepts_crlf_bom_and_blank_lines(tmp_path):
    # The official popular and adversarial files use CRLF line ends.
    original = (FIXTURE / "coco_pope_random.json").read_bytes()
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + original.replace(b"\n", b"\r\n\r\n"))
    assert load_pope_questions(path) == load_pope_questions(FIXTURE / "coco_pope_random.json")


@pytest.mark.parametrize("split", POPE_SPLITS)
def test_writer_reproduces_the_fixture_bytes(tmp_path, split):
    source = FIXTURE / f"coco_pope_{split}.json"
    out = write_pope_questions(tmp_path / f"{split}.jsonl", load_pope_questions(source))
    assert out.read_bytes() == source.read_bytes()
    assert out.read_text().splitlines()[0].startswith('{"question_id": 1, "image": ')  # official key order


def test_writer_rejects_bad_input(tmp_path):
    q = PopeQuestion(1, "a.png", "Is there a cat in the image?", "yes")
    with pytest.raises(ValueError, match="repeats question_id 1"):
        write_pope_questions(tmp_path / "x.jsonl", [q, q])
    with pytest.raises(ValueError, match="no questions to write"):
        write_pope_questions(tmp_path / "x.jsonl", [])
    with pytest.raises(TypeError, match=r"questions\[0\] is a dict"):
        write_pope_questions(tmp_path / "x.jsonl", [{"question_id": 1}])
    assert not (tmp_path / "x.jsonl").exists()


# ---------------------------------------------------------------- split files and images

def test_project_naming_is_found_too(tmp_path):
    questions = load_pope_questions(FIXTURE / "coco_pope_popular.json")
    write_pope_questions(tmp_path / "popular.jsonl", questions)
    assert find_pope_split_files(tmp_path, ["popular"]) == {"popular": tmp_path / "popular.jsonl"}
    split = load_pope_split(tmp_path, "popular", image_dir=IMAGES)
    assert split.questions == tuple(questions)


def test_split_files_missing_or_ambiguous(tmp_path):
    write_pope_questions(tmp_path / "random.jsonl", load_pope_questions(FIXTURE / "coco_pope_random.json"))
    write_pope_questions(tmp_path / "coco_pope_random.json", load_pope_questions(FIXTURE / "coco_pope_random.json"))
    with pytest.raises(PopeFormatError) as info:
        find_pope_split_files(tmp_path)
    assert info.value.errors == [
        f"{tmp_path}: split 'random' has two question files (coco_pope_random.json, random.jsonl), expected one",
        f"{tmp_path}: no question file for split 'popular', expected coco_pope_popular.json or popular.jsonl",
        f"{tmp_path}: no question file for split 'adversarial', expected coco_pope_adversarial.json or adversarial.jsonl",
    ]
    with pytest.raises(PopeFormatError, match="not a folder"):
        find_pope_split_files(tmp_path / "absent")


def test_missing_images_are_named_first_few_and_counted(tmp_path):
    questions = [PopeQuestion(i + 1, f"img_{i // 2:02d}.png", "Is there a cat in the image?", ("yes", "no")[i % 2])
                 for i in range(16)]  # 8 images, 2 questions each
    write_pope_questions(tmp_path / "random.jsonl", questions)
    images = tmp_path / "images"
    images.mkdir()
    (images / "img_03.png").write_bytes(b"")
    with pytest.raises(PopeFormatError) as info:
        load_pope_split(tmp_path, "random", image_dir=images)
    (message,) = info.value.errors
    assert message == (f"{tmp_path / 'random.jsonl'}: 7 of 8 images missing from {images}: img_00.png (question_id 1), "
                       "img_01.png (question_id 3), img_02.png (question_id 5), img_04.png (question_id 9), "
                       "img_05.png (question_id 11) and 2 more; expected every referenced image file in the image folder")
    assert load_pope_split(tmp_path, "random").image_dir is None  # without an image folder nothing is checked


def test_errors_of_all_splits_are_raised_together(tmp_path):
    for split in POPE_SPLITS:
        (tmp_path / f"{split}.jsonl").write_text('{"question_id": 1}\n', encoding="utf-8")
    with pytest.raises(PopeFormatError) as info:
        load_pope_splits(tmp_path)
    assert {e.split(":")[0] for e in info.value.errors} == {str(tmp_path / f"{s}.jsonl") for s in POPE_SPLITS}


# ---------------------------------------------------------------- the fixture itself

def test_fixture_is_tiny_and_its_pngs_are_valid():
    files = [p for p in FIXTURE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert sum(p.stat().st_size for p in files) < 50_000
    for png in sorted(IMAGES.glob("*.png")):
        width, height, raw = read_png(png)
        assert (width, height, len(raw)) == (32, 32, 32 * (1 + 32 * 3))


def test_fixture_matches_its_generator(tmp_path):
    builder = load_fixture_builder()
    builder.build(tmp_path)
    for split in POPE_SPLITS:
        name = f"coco_pope_{split}.json"
        assert (tmp_path / name).read_bytes() == (FIXTURE / name).read_bytes(), f"rerun {FIXTURE / 'make_fixture.py'}"
    for png in sorted(IMAGES.glob("*.png")):
        # Compare pixels, not bytes: zlib builds may compress the same pixels differently.
        assert read_png(tmp_path / "images" / png.name) == read_png(png), f"rerun {FIXTURE / 'make_fixture.py'}"


def test_module_docstring_example_runs():
    result = doctest.testmod(pope, raise_on_error=False)
    assert result.attempted >= 3 and result.failed == 0
