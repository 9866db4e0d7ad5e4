"""The record schema: frozen, unknown keys rejected, vocabularies closed, JSON Schema exported."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from alignscope.cli import app
from site_gen.schema import Method, Paper, ReportedResult, normalise_title

BASE = {"id": "x2024-demo", "title": "Demo", "authors": ["A B"], "summary": "A summary that is long enough."}


def test_minimal_paper_and_defaults():
    p = Paper.model_validate(BASE)
    assert p.tags == [] and p.introduces.methods == [] and p.reported == []


def test_records_are_frozen():
    p = Paper.model_validate(BASE)
    with pytest.raises(ValidationError):
        p.title = "changed"


@pytest.mark.parametrize(
    "patch, fragment",
    [
        ({"foo": 1}, "Extra inputs are not permitted"),
        ({"id": "Bad_ID"}, "should match pattern"),
        ({"id": "../etc/passwd"}, "should match pattern"),
        ({"authors": []}, "at least 1 item"),
        ({"arxiv": "2311.1692x"}, "should match pattern"),
        ({"doi": "doi:10.1/x"}, "should match pattern"),
        ({"url": "javascript:alert(1)"}, "should match pattern"),
        ({"summary": "TODO: write it, please, soon"}, "replace the TODO placeholder"),
        ({"year": 1800}, "greater than or equal to 1900"),
    ],
)
def test_bad_paper_fields(patch, fragment):
    with pytest.raises(ValidationError) as exc:
        Paper.model_validate({**BASE, **patch})
    assert fragment in str(exc.value)


METHOD = {"id": "vcd", "name": "VCD", "family": "mitigation/parameter-frozen/decoding", "summary": "A summary that is long enough.", "third_model": False}


def test_changes_vocabulary_accepts_scalar_and_rejects_unknown():
    assert Method.model_validate({**METHOD, "changes": "logits"}).changes == ["logits"]
    assert Method.model_validate({**METHOD, "changes": ["attention", "logits"]}).changes == ["attention", "logits"]
    with pytest.raises(ValidationError, match="'weights', 'input', 'hidden-states', 'attention', 'logits' or 'output-text'"):
        Method.model_validate({**METHOD, "changes": ["gradients"]})


def test_level_vocabulary():
    with pytest.raises(ValidationError, match="'object', 'attribute' or 'relation'"):
        Method.model_validate({**METHOD, "changes": "logits", "targets": {"levels": ["scene"]}})


def test_reported_result_ranges_and_missing_cells():
    r = ReportedResult.model_validate({"model": "m", "benchmark": "b", "metrics": {"accuracy": 88.4, "f1": None}, "source": "Table 1"})
    assert r.metrics["f1"] is None
    with pytest.raises(ValidationError, match="outside"):
        ReportedResult.model_validate({"model": "m", "benchmark": "b", "unit": "fraction", "metrics": {"accuracy": 88.4}, "source": "T"})
    with pytest.raises(ValidationError):
        ReportedResult.model_validate({"model": "m", "benchmark": "b", "metrics": {}, "source": "T"})


def test_normalise_title():
    assert normalise_title("VCD: Visual  Contrastive-Decoding!") == normalise_title("vcd visual contrastive decoding")


def test_schema_export_has_taxonomy_enums(mini_kb):
    result = CliRunner().invoke(app, ["schema", "--root", str(mini_kb)])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert schema["additionalProperties"] is False
    assert "level/object" in schema["properties"]["tags"]["items"]["enum"]
    assert schema["$defs"]["Method"]["properties"]["family"]["enum"] == ["mitigation/parameter-frozen/decoding"]
    assert schema["$defs"]["Targets"]["properties"]["causes"]["items"]["enum"] == ["model/ability-gap"]


def test_schema_export_to_file_and_taxonomy_kind(mini_kb, tmp_path):
    out = tmp_path / "taxonomy.schema.json"
    result = CliRunner().invoke(app, ["schema", "--kind", "taxonomy", "--out", str(out)])
    assert result.exit_code == 0
    assert json.loads(out.read_text())["title"] == "AlignScope taxonomy record"
    bad = CliRunner().invoke(app, ["schema", "--kind", "nope"])
    assert bad.exit_code == 2 and "must be 'paper' or 'taxonomy'" in bad.output
