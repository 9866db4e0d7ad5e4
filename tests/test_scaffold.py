"""`alignscope new-paper`: BibTeX or flags in, a valid record with a free id out."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from alignscope.cli import app
from site_gen.scaffold import BibtexError, fields_from_bibtex, latex_to_text, parse_bibtex, propose_id

BIB = r"""
@inproceedings{huo2024sid,
  title     = {Self-Introspective Decoding: Alleviating Hallucinations for Large Vision-Language Models},
  author    = {Huo, Fushuo and Xu, Wenchao and Zhang, Zhong and M{\"u}ller, Hans and others},
  booktitle = "International Conference on Learning Representations",
  year      = 2025,
  eprint    = {2408.02032},
  archivePrefix = {arXiv},
  doi = {10.48550/arXiv.2408.02032}
}
"""


def test_parse_bibtex_fields():
    f = fields_from_bibtex(parse_bibtex(BIB))
    assert f["title"].startswith("Self-Introspective Decoding")
    assert f["authors"] == ["Fushuo Huo", "Wenchao Xu", "Zhong Zhang", "Hans Müller", "others"]
    assert (f["year"], f["arxiv"], f["venue"]) == (2025, "2408.02032", "International Conference on Learning Representations")
    assert f["doi"] == "10.48550/arXiv.2408.02032"


@pytest.mark.parametrize("text, msg", [("no entry here", "no BibTeX entry found"), ("@article{k, author={A}}", "has no title"), ("@article{k, title={open", "unbalanced braces")])
def test_parse_bibtex_errors(text, msg):
    with pytest.raises(BibtexError, match=msg):
        parse_bibtex(text)


def test_latex_and_ids():
    assert latex_to_text(r"{Caf\'e} \& {B}ar -- x") == "Café & Bar – x"
    assert propose_id("VCD: Visual Contrastive Decoding", ["Sicong Leng"], 2024, set()) == "leng2024-vcd"
    assert propose_id("VCD: again", ["Sicong Leng"], 2024, {"leng2024-vcd"}) == "leng2024-vcd-2"
    assert propose_id("Seeing is believing in large models", ["Ailin Deng"], 2024, set()) == "deng2024-seeing-believing-large-models"


def test_new_paper_from_bibtex_file_validates(mini_kb, tmp_path):
    bib = tmp_path / "p.bib"
    bib.write_text(BIB)
    result = CliRunner().invoke(app, ["new-paper", str(bib), "--root", str(mini_kb), "--tag", "mitigation/parameter-frozen/decoding",
                                      "--summary", "Decodes against a copy of the model that sees only the least important vision tokens."])
    assert result.exit_code == 0, result.output
    assert "created" in result.output and "the new record validates" in result.output
    text = (mini_kb / "papers" / "huo2025-self-introspective-decoding.yaml").read_text()
    assert 'arxiv: "2408.02032"' in text and "Hans Müller" in text
    assert CliRunner().invoke(app, ["validate", str(mini_kb)]).exit_code == 0


def test_new_paper_from_stdin_without_summary_points_at_todo(mini_kb):
    result = CliRunner().invoke(app, ["new-paper", "-", "--root", str(mini_kb)], input=BIB)
    assert result.exit_code == 1
    assert "papers/huo2025-self-introspective-decoding.yaml:" in result.output
    assert "summary: replace the TODO placeholder" in result.output


def test_new_paper_from_flags_picks_free_id(mini_kb):
    args = ["new-paper", "--root", str(mini_kb), "--title", "Mitigating Things", "--author", "Sicong Leng", "--year", "2024",
            "--summary", "A second paper by the same first author in the same year."]
    first = CliRunner().invoke(app, args)
    second = CliRunner().invoke(app, args[:-1] + ["A third paper, with a different title key."] )
    assert first.exit_code == 0, first.output
    assert (mini_kb / "papers" / "leng2024-mitigating-things.yaml").exists()
    # Same title twice is a duplicate paper: the second file gets a fresh id and the validator names both files.
    assert (mini_kb / "papers" / "leng2024-mitigating-things-2.yaml").exists()
    assert second.exit_code == 1 and "duplicate paper: same title as papers/leng2024-mitigating-things.yaml" in second.output


def test_new_paper_bad_input(mini_kb, tmp_path):
    bad = tmp_path / "bad.bib"
    bad.write_text("not bibtex")
    r = CliRunner().invoke(app, ["new-paper", str(bad), "--root", str(mini_kb)])
    assert r.exit_code == 2 and "no BibTeX entry found" in r.output
    r = CliRunner().invoke(app, ["new-paper", str(tmp_path / "missing.bib"), "--root", str(mini_kb)])
    assert r.exit_code == 2 and "cannot read" in r.output
    r = CliRunner().invoke(app, ["new-paper", "--root", str(mini_kb), "--title", "No authors"])
    assert r.exit_code == 2 and "at least one author" in r.output
    assert sorted(p.name for p in (mini_kb / "papers").iterdir()) == ["leng2024-vcd.yaml", "li2023-pope.yaml"]
