"""Every kind of broken input gives a located error, exit 1, no traceback, no hang, no side effect."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignscope.cli import app
from site_gen.load import MAX_RECORD_BYTES, Issue, load_knowledge_base

from .conftest import PAPERS, write_kb

runner = CliRunner()


def validate(root: Path, *extra: str):
    result = runner.invoke(app, ["validate", str(root), *extra])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def issues_for(root: Path, name: str):
    _, issues = load_knowledge_base(root)
    return [i for i in issues if i.path == f"papers/{name}"]


def test_valid_kb_passes_with_counts(mini_kb):
    result = validate(mini_kb)
    assert result.exit_code == 0, result.output
    assert "ok: " in result.output and "2 papers" in result.output and "1 methods" in result.output


def test_every_error_across_files_is_reported_at_once(mini_kb):
    (mini_kb / "papers" / "a2024-one.yaml").write_text("id: a2024-one\ntitle: One\nauthors: [A]\nsummary: too short\n")
    (mini_kb / "papers" / "b2024-two.yaml").write_text("id: b2024-two\ntitle: Two\nauthors: [B]\nsumary: x\n")
    result = validate(mini_kb)
    assert result.exit_code == 1
    assert "papers/a2024-one.yaml:4 summary: String should have at least 20 characters" in result.output
    assert "papers/b2024-two.yaml:4 sumary: unknown key 'sumary'; did you mean 'summary'?" in result.output
    assert "papers/b2024-two.yaml:1 summary: missing required key 'summary'" in result.output
    assert "3 errors in 2 files" in result.output


def test_python_tag_is_an_error_and_never_executed(mini_kb, tmp_path):
    marker = tmp_path / "pwned"
    (mini_kb / "papers" / "evil.yaml").write_text(
        f'id: evil\ntitle: !!python/object/apply:os.system ["touch {marker}"]\n'
    )
    result = validate(mini_kb)
    assert result.exit_code == 1
    assert "papers/evil.yaml:2: tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed" in result.output
    assert not marker.exists()


def test_duplicate_key_names_both_lines(mini_kb):
    (mini_kb / "papers" / "dup.yaml").write_text("id: dup\ntitle: A\ntitle: B\n")
    assert "papers/dup.yaml:3 title: duplicate key (first defined at line 2)" in validate(mini_kb).output


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "papers/x.yaml:1: empty file: expected a mapping with keys id, title, authors, summary"),
        ("# only a comment\n", "papers/x.yaml:1: empty file"),
        ("- a\n- b\n", "papers/x.yaml:1: expected a mapping with keys id, title, authors, summary at the top level, found a list"),
        ("just a string\n", "found a single value"),
        ("id: x\ntitle: [unclosed\nauthors: [a]\n", "papers/x.yaml:3: YAML syntax error"),
        ("id: x\n---\nid: y\n", "papers/x.yaml:2: YAML syntax error: expected a single document"),
        ("id: x\n\ttitle: tab\n", "papers/x.yaml:2: YAML syntax error"),
    ],
)
def test_malformed_files(mini_kb, text, expected):
    (mini_kb / "papers" / "x.yaml").write_text(text)
    result = validate(mini_kb)
    assert result.exit_code == 1
    assert expected in result.output


def test_non_utf8_file(mini_kb):
    (mini_kb / "papers" / "x.yaml").write_bytes(b"id: x\ntitle: caf\xe9\n")
    assert "papers/x.yaml:2: file is not valid UTF-8" in validate(mini_kb).output


def test_oversized_file_is_rejected_without_parsing(mini_kb):
    big = mini_kb / "papers" / "big.yaml"
    with open(big, "w") as fh:
        fh.write("id: big\nsummary: '")
        fh.write("x" * (30 * 1024 * 1024))
        fh.write("'\n")
    t0 = time.perf_counter()
    result = validate(mini_kb)
    elapsed = time.perf_counter() - t0
    assert f"papers/big.yaml:1: file is {big.stat().st_size:,} bytes; a record may be at most {MAX_RECORD_BYTES:,} bytes" in result.output
    assert elapsed < 10  # a hang guard, not a speed target: the file is never read


def test_alias_bomb_stops_at_first_alias(mini_kb):
    lines = ["id: bomb", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghij":
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
        prev = name
    (mini_kb / "papers" / "bomb.yaml").write_text("\n".join(lines) + "\n")
    result = validate(mini_kb)
    assert "papers/bomb.yaml:3: alias *a is not allowed: write the value out in full" in result.output


def test_deep_nesting(mini_kb):
    (mini_kb / "papers" / "deep.yaml").write_text("id: deep\nx: " + "[" * 200 + "]" * 200 + "\n")
    assert "papers/deep.yaml:2: nesting deeper than 64 levels" in validate(mini_kb).output
    (mini_kb / "papers" / "deep.yaml").write_text("id: deep\nx: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "papers/deep.yaml:1: nesting deeper than 64 levels" in validate(mini_kb).output


def test_symlink_is_refused(mini_kb, tmp_path):
    target = tmp_path / "outside.yaml"
    target.write_text("id: outside\n")
    (mini_kb / "papers" / "link.yaml").symlink_to(target)
    assert "papers/link.yaml:1: not a regular file" in validate(mini_kb).output


def _paper(extra: str, pid: str = "x2024-new", title: str = "A New Paper") -> str:
    return f'id: {pid}\ntitle: "{title}"\nauthors: [A]\nsummary: A summary long enough to pass the check.\n{extra}'


@pytest.mark.parametrize(
    "extra, line, message",
    [
        ("tags: [level/objet]\n", 5, "tags[0]: unknown taxonomy node 'level/objet'; did you mean 'level/object'?"),
        ("cites: [nobody2020-x]\n", 5, "cites[0]: unknown paper 'nobody2020-x'"),
        ("cites: [x2024-new]\n", 5, "cites[0]: a paper cannot cite itself"),
        (
            "introduces:\n  methods:\n    - id: m\n      name: M\n      family: mitigation/parameter-frozen\n"
            "      summary: A method summary of enough length.\n      changes: [logits]\n      third_model: false\n",
            9,
            "introduces.methods[0].family: unknown mitigation family 'mitigation/parameter-frozen'; did you mean 'mitigation/parameter-frozen/decoding'?",
        ),
        (
            "introduces:\n  methods:\n    - id: m\n      name: M\n      family: mitigation/parameter-frozen/decoding\n"
            "      summary: A method summary of enough length.\n      targets: {causes: [model/abilty-gap]}\n"
            "      changes: [logits]\n      third_model: false\n      extends: [vcdd]\n",
            11,
            "introduces.methods[0].targets.causes[0]: unknown cause 'model/abilty-gap'; did you mean 'model/ability-gap'?",
        ),
        (
            "reported:\n  - {model: llava-2, benchmark: pope, split: random, metrics: {accuracy: 1}, source: T1}\n",
            6,
            "reported[0].model: unknown model 'llava-2'",
        ),
        (
            "reported:\n  - {model: llava-1.5-7b, benchmark: popee, metrics: {accuracy: 1}, source: T1}\n",
            6,
            "reported[0].benchmark: unknown benchmark 'popee'; did you mean 'pope'?",
        ),
        (
            "reported:\n  - {model: llava-1.5-7b, benchmark: pope, method: sid, metrics: {accuracy: 1}, source: T1}\n",
            6,
            "reported[0].method: unknown method 'sid'",
        ),
        (
            "reported:\n  - {model: llava-1.5-7b, benchmark: pope, split: hard, metrics: {accuracy: 1}, source: T1}\n",
            6,
            "reported[0].split: unknown split of pope 'hard'",
        ),
        (
            "reported:\n  - {model: llava-1.5-7b, benchmark: pope, metrics: {accuracy: 101}, source: T1}\n",
            6,
            "reported[0]: metric accuracy=101.0 is outside [0, 100] for unit 'percent'",
        ),
        ("arxiv: 2311.16920\n", 5, "arxiv: write the arXiv id in quotes"),
        ("year: twenty\n", 5, "year: Input should be a valid integer"),
        ("tags: [level/object, level/object]\n", 5, "tags: tags lists 'level/object' twice"),
    ],
)
def test_located_reference_and_value_errors(mini_kb, extra, line, message):
    (mini_kb / "papers" / "x2024-new.yaml").write_text(_paper(extra))
    found = [i.format() for i in issues_for(mini_kb, "x2024-new.yaml")]
    assert any(f.startswith(f"papers/x2024-new.yaml:{line} {message}") for f in found), found


def test_extends_unknown_method(mini_kb):
    extra = (
        "introduces:\n  methods:\n    - id: m\n      name: M\n      family: mitigation/parameter-frozen/decoding\n"
        "      summary: A method summary of enough length.\n      changes: [logits]\n      third_model: false\n      extends: [vcdd]\n"
    )
    (mini_kb / "papers" / "x2024-new.yaml").write_text(_paper(extra))
    found = [i.format() for i in issues_for(mini_kb, "x2024-new.yaml")]
    assert "papers/x2024-new.yaml:13 introduces.methods[0].extends[0]: unknown method 'vcdd'; did you mean 'vcd'?" in found


def test_unknown_taxonomy_reference_in_taxonomy_file(mini_kb):
    text = (mini_kb / "taxonomy" / "level.yaml").read_text().replace("references: [leng2024-vcd]", "references: [leng2024-vdc]")
    (mini_kb / "taxonomy" / "level.yaml").write_text(text)
    _, issues = load_knowledge_base(mini_kb)
    assert [i.format() for i in issues] == [
        "taxonomy/level.yaml:10 children[0].references[0]: unknown paper 'leng2024-vdc'; did you mean 'leng2024-vcd'?"
    ]


def test_id_must_match_file_name(mini_kb):
    (mini_kb / "papers" / "other-name.yaml").write_text(_paper(""))
    found = [i.format() for i in issues_for(mini_kb, "other-name.yaml")]
    assert any(f.startswith("papers/other-name.yaml:1 id: id 'x2024-new' must equal the file name 'other-name'") for f in found)


@pytest.mark.parametrize(
    "extra, title, key, label",
    [
        ('arxiv: "2311.16922"\n', "Something else entirely", "arxiv", "arXiv id"),
        ("doi: 10.1000/XYZ\n", "Another title", "doi", "DOI"),
        ("", "Mitigating object hallucinations, through visual contrastive decoding!", "title", "title"),
    ],
)
def test_duplicate_papers_name_both_files(mini_kb, extra, title, key, label):
    if key == "doi":  # give the original a DOI first (case differs: DOIs compare case-insensitively)
        p = mini_kb / "papers" / "leng2024-vcd.yaml"
        p.write_text(p.read_text().replace("year: 2024\n", "year: 2024\ndoi: 10.1000/xyz\n"))
    (mini_kb / "papers" / "zz2024-copy.yaml").write_text(_paper(extra, pid="zz2024-copy", title=title))
    found = [i.format() for i in issues_for(mini_kb, "zz2024-copy.yaml")]
    assert any(f"{key}: duplicate paper: same {label} as papers/leng2024-vcd.yaml:" in f and "(leng2024-vcd)" in f for f in found), found


def test_duplicate_method_id_names_both_places(mini_kb):
    extra = (
        "introduces:\n  methods:\n    - id: vcd\n      name: VCD again\n      family: mitigation/parameter-frozen/decoding\n"
        "      summary: A method summary of enough length.\n      changes: [logits]\n      third_model: false\n"
    )
    (mini_kb / "papers" / "x2024-new.yaml").write_text(_paper(extra))
    found = [i.format() for i in issues_for(mini_kb, "x2024-new.yaml")]
    assert "papers/x2024-new.yaml:7 introduces.methods[0].id: method id 'vcd' is already defined in papers/leng2024-vcd.yaml:12" in found


def test_github_format(mini_kb):
    (mini_kb / "papers" / "dup.yaml").write_text("id: dup\ntitle: A\ntitle: B\n")
    result = validate(mini_kb, "--format", "github")
    assert result.exit_code == 1
    assert "::error file=papers/dup.yaml,line=3::title: duplicate key (first defined at line 2)" in result.output


def test_not_a_checkout(tmp_path):
    result = validate(tmp_path)
    assert result.exit_code == 1 and "no taxonomy/ or papers/ folder here" in result.output


def test_validation_leaves_files_untouched(mini_kb):
    before = {p: p.read_bytes() for p in mini_kb.rglob("*") if p.is_file()}
    (mini_kb / "papers" / "dup.yaml").write_text("id: dup\ntitle: A\ntitle: B\n")
    before[mini_kb / "papers" / "dup.yaml"] = (mini_kb / "papers" / "dup.yaml").read_bytes()
    validate(mini_kb)
    after = {p: p.read_bytes() for p in mini_kb.rglob("*") if p.is_file()}
    assert after == before


def test_invalid_paper_does_not_cascade_into_unknown_reference_errors(mini_kb):
    pope = mini_kb / "papers" / "li2023-pope.yaml"
    pope.write_text(pope.read_text().replace("year: 2023", "year: soon"))
    _, issues = load_knowledge_base(mini_kb)
    assert [i.path for i in issues] == ["papers/li2023-pope.yaml"]


def test_a_file_with_schema_errors_still_gets_its_reference_errors(mini_kb):
    (mini_kb / "papers" / "me2025-broken.yaml").write_text(
        'id: me2025-broken\ntitle: "A Broken Record"\nauthors: Jane Doe\nsummary: short\n'
        "tags: [level/objet]\nintroduces:\n  methods:\n    - id: vcd\n      name: Mine\n      family: decoding\n"
        "      changes: [logit]\n      third_model: false\n"
    )
    found = [i.format() for i in issues_for(mini_kb, "me2025-broken.yaml")]
    assert found == [
        "papers/me2025-broken.yaml:3 authors: Input should be a valid list",
        "papers/me2025-broken.yaml:4 summary: String should have at least 20 characters",
        "papers/me2025-broken.yaml:5 tags[0]: unknown taxonomy node 'level/objet'; did you mean 'level/object'?",
        "papers/me2025-broken.yaml:8 introduces.methods[0].id: method id 'vcd' is already defined in papers/leng2024-vcd.yaml:12",
        "papers/me2025-broken.yaml:8 introduces.methods[0].summary: missing required key 'summary'",
        "papers/me2025-broken.yaml:10 introduces.methods[0].family: unknown mitigation family 'decoding' (a taxonomy node of kind 'family')",
        "papers/me2025-broken.yaml:11 introduces.methods[0].changes[0]: 'logit': Input should be 'weights', 'input', 'hidden-states', 'attention', 'logits' or 'output-text'",
    ]


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x08", "\x0b", "\x1b", "\x7f", "\x9f", "\ufffe"])
def test_non_printable_character_is_located(mini_kb, char):
    (mini_kb / "papers" / "x.yaml").write_text(f"id: x\n\ntitle: a{char}b\n", encoding="utf-8")
    kind = "not a character" if char == "\ufffe" else "control character"
    expected = f"papers/x.yaml:3: U+{ord(char):04X} is not allowed in a record ({kind})"
    assert [i.format() for i in issues_for(mini_kb, "x.yaml")] == [expected]
    result = validate(mini_kb)
    assert result.exit_code == 1 and expected in result.output


@pytest.mark.parametrize(
    "value, message",
    [
        ('"\\U00110000"', "escape sequence beyond \\U0010FFFF is not a Unicode character"),
        ("!!int x", "cannot read 'x' as !!int"),
        ("!!float abc", "cannot read 'abc' as !!float"),
        ("!!bool maybe", "cannot read 'maybe' as !!bool"),
        ("!!int ''", "cannot read '' as !!int"),
        ("0x_", "cannot read '0x_' as !!int"),  # resolved to !!int by PyYAML, then int('', 16) fails
    ],
)
def test_unreadable_scalar_is_located(mini_kb, value, message):
    (mini_kb / "papers" / "x.yaml").write_text(f"id: x\ntitle: A\nyear: {value}\n")
    assert [i.format() for i in issues_for(mini_kb, "x.yaml")] == [f"papers/x.yaml:3: {message}"]
    assert f"papers/x.yaml:3: {message}" in validate(mini_kb).output


@pytest.mark.parametrize("fmt", ["text", "github"])
def test_keys_and_messages_are_printed_escaped_on_one_line(mini_kb, fmt):
    (mini_kb / "papers" / "x.yaml").write_text(
        'id: x\nintroduces:\n  "a\\nb\\e]0;TITLE\\aX": 2\n  "\\u202eé漢": 1\n', encoding="utf-8"
    )
    _, issues = load_knowledge_base(mini_kb)
    result = validate(mini_kb, "--format", fmt)
    lines = result.output.splitlines()
    assert all(c >= " " for c in result.output.replace("\n", "")), repr(result.output)
    assert len([line for line in lines if "papers/x.yaml" in line]) == len(issues) == 5
    assert "introduces.a\\nb\\x1b]0;TITLE\\x07X: unknown key" in result.output
    assert "introduces.\\u202eé漢: unknown key" in result.output  # bidi control escaped, letters kept


def test_github_format_escapes_properties_and_percent():
    issue = Issue("papers/a,b:c.yaml", 2, "k\r", "100%\n")
    assert issue.github() == "::error file=papers/a%2Cb%3Ac.yaml,line=2::k\\r: 100%25\\n"
