"""The knowledge base's record types: pydantic v2, frozen, unknown keys rejected.

A YAML file under ``taxonomy/`` holds one root :class:`TaxonomyNode` and its
subtree; a YAML file under ``papers/`` holds one :class:`Paper`,
which may introduce methods, benchmarks and models and carry reported results.

Cross-references (tags, cited papers, families, causes, models, benchmarks)
are plain IDs here; :mod:`site_gen.load` checks that each one resolves.

>>> Paper.model_validate({"id": "x2024-demo", "title": "Demo", "authors": ["A. B"],
...     "year": 2024, "summary": "A record used only to show the schema in a doctest."}).id
'x2024-demo'
"""
from __future__ import annotations

import re
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# ---------------------------------------------------------------- vocabularies
# Closed vocabularies live here; open ones (causes, families, stages ...) are
# taxonomy node IDs, so adding a node to taxonomy/ is all it takes to extend them.

Level = Literal["object", "attribute", "relation"]
"""The survey's three semantic levels of behavioural misalignment (Section 3.1)."""

Change = Literal["weights", "input", "hidden-states", "attention", "logits", "output-text"]
"""Where a mitigation method intervenes in the model's pipeline."""

NodeKind = Literal[
    "root",  # a top-level grouping (e.g. "cause"); carries no meaning by itself
    "aspect",  # alignment aspect: representational / behavioural
    "stage",  # a training stage (Appendix A.1)
    "level",  # misalignment semantic level (Section 3.1)
    "cause-group",  # data / model / inference level
    "cause",  # one cause of misalignment (Section 3.2, Appendix E)
    "family-group",  # parameter-tuning / parameter-frozen and their sub-groups
    "family",  # a mitigation family a method can belong to
    "evaluation",  # how alignment is measured (Appendix C)
    "direction",  # a future research direction (Appendix H)
]

Evaluator = Literal["traditional", "third-model"]

SLUG = r"^[a-z0-9][a-z0-9.+-]*$"
"""Record IDs: lower-case letters, digits, '.', '+' and '-'; never a path."""
TAX_ID = r"^[a-z0-9][a-z0-9-]*(/[a-z0-9][a-z0-9-]*)*$"
"""Taxonomy IDs are slash-separated paths of slugs, e.g. ``mitigation/parameter-frozen/decoding``."""
ARXIV = r"^(\d{4}\.\d{4,5}|[a-z-]+(\.[A-Z]{2})?/\d{7})$"
DOI = r"^10\.\d{4,9}/\S+$"
URL = r"^https?://[^\s<>\"']+$"

Slug = Annotated[str, Field(pattern=SLUG, max_length=80)]
TaxId = Annotated[str, Field(pattern=TAX_ID, max_length=160)]
ShortText = Annotated[str, Field(min_length=1, max_length=300)]
Summary = Annotated[str, Field(min_length=20, max_length=3000)]
Url = Annotated[str, Field(pattern=URL, max_length=500)]
MetricName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)]
"""Metric names: lower-case snake_case (accuracy, f1, yes_ratio, chair_s)."""

CAUSE_ROOT = "cause"
"""Causes are written relative to this taxonomy root: ``model/ability-gap`` means ``cause/model/ability-gap``."""


class Record(BaseModel):
    """Base for every record: immutable, and an unknown key is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


def _as_list(value):
    """Let a single value stand for a one-element list (``changes: logits``)."""
    return [value] if isinstance(value, str) else value


def _no_repeats(values: list, info: ValidationInfo) -> list:
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{info.field_name} lists {v!r} twice")
        seen.add(v)
    return values


NoRepeats = AfterValidator(_no_repeats)
"""Marks a list field whose items must be distinct."""


# ---------------------------------------------------------------- taxonomy


class Measure(Record):
    """One number of a reproduced record: a benchmark split's metric."""

    benchmark: Slug = Field(description="Benchmark name as in results, e.g. world-pope.")
    split: Slug
    metric: MetricName


class CauseExperiment(Record):
    """How AlignScope tests a cause: two arms of plugins/reproduce.yaml, compared per training seed."""

    experiment: Slug = Field(description="The experiment's name in plugins/reproduce.yaml.")
    control: Slug = Field(description="Method label of the arm without the cause.")
    treated: Slug = Field(description="Method label of the arm with the cause.")
    measure: Measure = Field(description="The effect is treated minus control on this number (per seed) ...")
    minus: Optional[Measure] = Field(None, description="... minus this one, when the effect is a gap (e.g. random minus adversarial accuracy).")
    expect: Literal["increase", "decrease"] = Field(description="What the survey predicts the cause does to the measure.")
    hypothesis: Summary = Field(description="The prediction, in our own words.")


class TaxonomyNode(Record):
    """One concept of the survey's taxonomy; its full ID is its parent's ID + ``/`` + ``id``."""

    id: Slug = Field(description="Local slug; the full ID is the path from the root, e.g. cause/model/ability-gap.")
    name: ShortText = Field(description="Display name.")
    kind: NodeKind = Field(description="What sort of concept this is.")
    summary: Summary = Field(description="What the concept means, in our own words.")
    section: Optional[ShortText] = Field(None, description="Where the survey discusses it, e.g. '3.2.2' or 'Appendix E'.")
    references: Annotated[list[Slug], NoRepeats] = Field(default_factory=list, description="Paper IDs the survey cites for this concept.")
    experiments: list[CauseExperiment] = Field(default_factory=list, description="For a cause: reproduced experiments that test it.")
    children: list["TaxonomyNode"] = Field(default_factory=list)


# ---------------------------------------------------------------- things a paper introduces


class Targets(Record):
    levels: Annotated[list[Level], NoRepeats] = Field(default_factory=list, description="Misalignment levels the method addresses.")
    causes: Annotated[list[TaxId], NoRepeats] = Field(
        default_factory=list, description="Causes it addresses, relative to the 'cause' root, e.g. model/ability-gap."
    )


class Method(Record):
    """A mitigation method introduced by the paper that holds it."""

    id: Slug
    name: ShortText
    aliases: list[ShortText] = Field(default_factory=list, description="Other names, e.g. how the survey spells it.")
    family: TaxId = Field(description="A taxonomy node of kind 'family', e.g. mitigation/parameter-frozen/decoding.")
    summary: Summary
    targets: Targets = Field(default_factory=Targets)
    changes: Annotated[list[Change], NoRepeats] = Field(min_length=1, description="Where it intervenes.")
    third_model: bool = Field(description="Needs a separate model (detector, LLM judge, reward model ...) at train or test time.")
    extends: Annotated[list[Slug], NoRepeats] = Field(default_factory=list, description="Method IDs this one builds on.")
    plugin: Optional[Slug] = Field(None, description="Registered plugin name that implements it in AlignScope, if any.")
    plugin_note: Optional[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(
        None, description="How AlignScope's plugin departs from the original (stand-ins, decoding); shown on the method page.")
    code: Optional[Url] = Field(None, description="Official code repository.")

    _changes_scalar = field_validator("changes", mode="before")(classmethod(lambda cls, v: _as_list(v)))


class Dimensions(Record):
    """The five evaluation dimensions of the survey's Table 3."""

    object: bool
    attribute: bool
    relation: bool
    cognition: bool = Field(description="Evaluates cognitive reasoning.")
    instruction_following: bool


class Benchmark(Record):
    id: Slug
    name: ShortText
    summary: Summary
    dimensions: Dimensions
    evaluator: Evaluator = Field(description="Traditional metrics, or a third model as judge.")
    dimensions_source: ShortText = Field(
        description="Where the dimension flags come from: 'survey Table 3', or our reading of the paper."
    )
    splits: list[Slug] = Field(default_factory=list)
    metrics: list["MetricName"] = Field(default_factory=list, description="Metric names as used in results, e.g. accuracy, f1, chair_s.")
    url: Optional[Url] = None


class Model(Record):
    id: Slug
    name: ShortText
    vision_encoder: ShortText
    adapter: ShortText
    llm: ShortText
    components_source: ShortText = Field(description="Where the components come from, e.g. 'survey Table 2'.")
    hf_id: Optional[Annotated[str, Field(pattern=r"^[\w.-]+/[\w.-]+$")]] = Field(
        None, description="Hugging Face repository id, e.g. llava-hf/llava-1.5-7b-hf."
    )
    summary: Optional[Summary] = None


class Introduces(Record):
    methods: list[Method] = Field(default_factory=list)
    benchmarks: list[Benchmark] = Field(default_factory=list)
    models: list[Model] = Field(default_factory=list)


# ---------------------------------------------------------------- reported numbers


class Cost(Record):
    seconds_per_input: Optional[Annotated[float, Field(ge=0)]] = None
    hardware: Optional[ShortText] = None


class ReportedResult(Record):
    """A number exactly as printed in the source paper. A cell empty in the source is ``null``."""

    model: Slug = Field(description="Model ID (from some paper's introduces.models).")
    benchmark: Slug
    method: Optional[Slug] = Field(None, description="Method ID; omitted for the unmitigated model.")
    split: Optional[Slug] = None
    setting: Optional[ShortText] = Field(None, description="E.g. 'coco', 'float16, official code'.")
    unit: Literal["percent", "fraction", "score"] = "percent"
    metrics: dict[MetricName, Optional[float]] = Field(min_length=1)
    cost: Optional[Cost] = None
    source: ShortText = Field(description="Where in this paper the numbers are printed, e.g. 'Table 1'.")
    note: Optional[Annotated[str, Field(max_length=1000)]] = None

    @model_validator(mode="after")
    def _percent_range(self):
        hi = 100.0 if self.unit == "percent" else 1.0 if self.unit == "fraction" else None
        if hi is not None:
            for k, v in self.metrics.items():
                if v is not None and not (0.0 <= v <= hi):
                    raise ValueError(f"metric {k}={v} is outside [0, {hi:g}] for unit {self.unit!r}")
        return self


# ---------------------------------------------------------------- the paper


class Paper(Record):
    """One paper: bibliographic facts, our summary, its place in the taxonomy, and what it brings."""

    id: Slug = Field(description="Equals the file stem: <firstauthor><year>-<slug>.")
    title: Annotated[str, Field(min_length=1, max_length=400)]
    authors: list[Annotated[str, Field(min_length=1, max_length=120)]] = Field(min_length=1)
    year: Optional[Annotated[int, Field(ge=1900, le=2100)]] = Field(None, description="Omitted only when the source gives none.")
    venue: Optional[ShortText] = None
    arxiv: Optional[Annotated[str, Field(pattern=ARXIV)]] = Field(None, description="arXiv id without version, e.g. 2311.16922.")
    doi: Optional[Annotated[str, Field(pattern=DOI)]] = None
    url: Optional[Url] = None
    summary: Summary = Field(description="Two or three sentences in our own words.")
    tags: Annotated[list[TaxId], NoRepeats] = Field(default_factory=list, description="Taxonomy node IDs.")
    cites: Annotated[list[Slug], NoRepeats] = Field(default_factory=list, description="IDs of papers in the knowledge base this one cites.")
    survey_key: Optional[ShortText] = Field(None, description="How the survey cites it, e.g. 'Leng et al., 2024'.")
    introduces: Introduces = Field(default_factory=Introduces)
    reported: list[ReportedResult] = Field(default_factory=list)

    @field_validator("summary")
    @classmethod
    def _written(cls, v):
        if v.upper().startswith("TODO"):
            raise ValueError("replace the TODO placeholder with two or three sentences in your own words")
        return v

    @field_validator("arxiv", mode="before")
    @classmethod
    def _arxiv_text(cls, v):
        # YAML reads 2311.16922 unquoted as a float and drops trailing zeros; insist on a string.
        if isinstance(v, float):
            raise ValueError("write the arXiv id in quotes (YAML reads an unquoted id as a number)")
        return v


def normalise_title(title: str) -> str:
    """Title key for duplicate detection: lower-case letters and digits only."""
    return re.sub(r"[^a-z0-9]+", "", title.lower())


