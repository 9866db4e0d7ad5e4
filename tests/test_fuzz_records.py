"""Fuzzing the record loader: no input text makes it raise, and every issue is located on one line.

Each run tries a few hundred records, derandomised so CI sees the same ones every time. For a
longer hunt: ALIGNSCOPE_FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest -q tests/test_fuzz_records.py
"""
from __future__ import annotations

import os
import textwrap

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from site_gen.load import load_knowledge_base, parse_record_file

from .conftest import PAPERS, REPO, write_kb

EXAMPLES = int(os.environ.get("ALIGNSCOPE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TARGET = "leng2024-vcd.yaml"  # the fuzzed record replaces this paper, so references to it stay meaningful

# Valid records to mutate: the test base's papers and the two smallest real ones.
SEEDS = [textwrap.dedent(t).lstrip() for t in PAPERS.values()] + [
    p.read_text(encoding="utf-8") for p in sorted((REPO / "papers").glob("*.yaml"), key=lambda p: (p.stat().st_size, p.name))[:2]
]

# Characters PyYAML's reader refuses: one of them ends parsing at once, so they come seldom.
REFUSED = ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\x9f", "\ufffe", "\uffff"]
# Fragments PyYAML treats specially: line breaks, tags, anchors, escapes, scalars its resolver
# types but its constructor cannot read, flow and block syntax, deep nesting.
SYNTAX = [
    "\x85", "\ufeff", "\u202e", "\u2028", "\u2029", "\t", "\n", "\r", "\r\n", " ", "é", "漢", "🙂",
    "!!int ", "!!float ", "!!bool ", "!!str ", "!!null ", "!!map ", "!!seq ", "!!binary ", "!!timestamp ",
    "!!set ", "!!omap ", "!!python/object/apply:os.system ", "!!python/name:os.system ", "!local ",
    "!<tag:yaml.org,2002:int> ", "%TAG ! tag:yaml.org,2002:\n", "%YAML 1.1\n", "---\n", "...\n",
    "&a ", "*a", "<<: ", "? ", ": ", "- ", "'", '"', "\\", '"\\U00110000"', '"\\x"', '"\\e\\a"', "|", ">-",
    "#", "[", "]", "{", "}", ",", "0x_", "0b_", "._", "1e999", "-.inf", ".nan", "1:2:3", "2024-13-45",
    "~", "null", "true", "no", "9" * 5000, "[" * 70, "{a: " * 70, "  " * 40,
]
fragment = st.one_of(st.sampled_from(SYNTAX), st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=6))


@st.composite
def mutated(draw, texts) -> str:
    """A text from ``texts`` with a few fragments inserted, spans replaced or deleted."""
    text = draw(texts)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.sampled_from([0, 0, 1, 3, 20]))  # 0: a pure insertion
        kind = draw(st.integers(0, 19))  # 0, 1: delete only; 2: a refused character; else a fragment
        insert = "" if kind < 2 else draw(st.sampled_from(REFUSED)) if kind == 2 else draw(fragment)
        text = text[:at] + insert + text[at + cut:]
    return text


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30),
    st.sampled_from(["vcd", "pope", "level/object", "li2023-pope", "logits", "2311.16922", "Table 1"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=25)
keys = st.one_of(
    st.sampled_from(["id", "title", "authors", "year", "summary", "tags", "cites", "introduces", "reported",
                     "methods", "benchmarks", "models", "metrics", "split"]),
    st.text(max_size=12), st.integers(), st.booleans(),
)


@st.composite
def dumped(draw) -> str:
    """Random data in the shape of a record, written by PyYAML in block or flow style."""
    record = draw(st.dictionaries(keys, values, max_size=8))
    record.setdefault("id", "leng2024-vcd")
    flow = draw(st.sampled_from([None, True, False]))
    return yaml.safe_dump(record, default_flow_style=flow, allow_unicode=draw(st.booleans()), sort_keys=False)


@pytest.fixture(scope="module")
def fuzz_kb(tmp_path_factory):
    """One small valid base for the whole module; each example rewrites only its target record."""
    return write_kb(tmp_path_factory.mktemp("fuzz"))


def check(root, text: str) -> None:
    """Write ``text`` as the target record; parse it and load the base: nothing raises, all is located."""
    path = root / "papers" / TARGET
    path.write_text(text, encoding="utf-8")
    src, parsed = parse_record_file(path, f"papers/{TARGET}", "keys id, title, authors, summary")
    # The loader skips a file that does not parse (same call as above), so only parsed ones get a full load.
    loaded = load_knowledge_base(root)[1] if src is not None else []
    lines = len(text.splitlines()) + 1  # splitlines knows every break YAML counts
    for issue in parsed + loaded:
        shown = issue.format()
        assert issue.path and isinstance(issue.line, int) and issue.line >= 1, issue
        assert shown.isprintable() and issue.github().isprintable(), shown
        assert issue.path != f"papers/{TARGET}" or issue.line <= lines, (shown, text)


def test_target_seed_loads_cleanly(fuzz_kb):
    (fuzz_kb / "papers" / TARGET).write_text(SEEDS[0], encoding="utf-8")
    assert load_knowledge_base(fuzz_kb)[1] == []


@FUZZ
@given(text=mutated(st.sampled_from(SEEDS)))
def test_mutated_records_never_raise(fuzz_kb, text):
    check(fuzz_kb, text)


@FUZZ
@given(text=mutated(dumped()))
def test_mutated_random_data_never_raises(fuzz_kb, text):
    check(fuzz_kb, text)
