"""JSON Schema of the record types, with the taxonomy's IDs as enums for editor completion.

>>> s = record_schema("paper", None)
>>> s["title"]
'AlignScope paper record'
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .schema import CAUSE_ROOT, Paper, TaxonomyNode


def record_schema(kind: str, root: Optional[Path]) -> dict:
    """``kind`` is ``paper`` or ``taxonomy``; with a checkout ``root``, tags/families/causes get enums."""
    model = Paper if kind == "paper" else TaxonomyNode
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"AlignScope {kind} record"
    if kind != "paper" or root is None:
        return schema
    from .load import load_knowledge_base

    kb, _ = load_knowledge_base(Path(root))
    if not kb.taxonomy:
        return schema
    defs = schema.get("$defs", {})
    schema["properties"]["tags"]["items"]["enum"] = sorted(kb.taxonomy)
    defs["Method"]["properties"]["family"]["enum"] = sorted(kb.nodes_of_kind("family"))
    causes = sorted(k[len(CAUSE_ROOT) + 1:] for k in kb.nodes_of_kind("cause"))
    defs["Targets"]["properties"]["causes"]["items"]["enum"] = causes
    return schema
