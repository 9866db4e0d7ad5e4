"""Scaffold a new paper record from a BibTeX entry or from plain fields.

>>> entry = parse_bibtex('@inproceedings{k, title={{VCD}: Visual Contrastive Decoding}, '
...                      'author={Leng, Sicong and Zhang, Hang}, year={2024}}')
>>> fields_from_bibtex(entry)["authors"]
['Sicong Leng', 'Hang Zhang']
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

SUMMARY_PLACEHOLDER = "TODO: two or three sentences, in your own words, on what the paper does and finds."

_ACCENTS = {'"': "\u0308", "'": "\u0301", "`": "\u0300", "^": "\u0302", "~": "\u0303", "c": "\u0327", "v": "\u030c", "=": "\u0304", ".": "\u0307", "u": "\u0306", "H": "\u030b"}
_STOP = set("a an the of in for with via and to by on from at is are as do does can be".split())


class BibtexError(ValueError):
    """The text is not a BibTeX entry we can read; the message says where."""


@dataclass
class BibEntry:
    kind: str
    key: str
    fields: dict[str, str]


def parse_bibtex(text: str) -> BibEntry:
    """Parse the first ``@type{key, field = {...} | "..." | number, ...}`` entry in ``text``."""
    m = re.search(r"@\s*([A-Za-z]+)\s*[{(]\s*([^,\s]*)\s*,", text)
    if not m:
        raise BibtexError("no BibTeX entry found: expected something like @article{key, title={...}, ...}")
    kind, key, pos = m.group(1).lower(), m.group(2), m.end()
    fields: dict[str, str] = {}
    n = len(text)
    while pos < n:
        fm = re.compile(r"\s*([A-Za-z][\w-]*)\s*=\s*").match(text, pos)
        if not fm:
            break
        name, pos = fm.group(1).lower(), fm.end()
        if pos >= n:
            raise BibtexError(f"field {name!r} has no value")
        if text[pos] == "{":
            depth, start = 0, pos
            while pos < n:
                if text[pos] == "{" and text[pos - 1] != "\\":
                    depth += 1
                elif text[pos] == "}" and text[pos - 1] != "\\":
                    depth -= 1
                    if depth == 0:
                        break
                pos += 1
            if depth:
                raise BibtexError(f"field {name!r}: unbalanced braces")
            value, pos = text[start + 1 : pos], pos + 1
        elif text[pos] == '"':
            end = text.find('"', pos + 1)
            if end < 0:
                raise BibtexError(f"field {name!r}: unterminated quotes")
            value, pos = text[pos + 1 : end], end + 1
        else:
            vm = re.compile(r"[\w.-]+").match(text, pos)
            if not vm:
                raise BibtexError(f"field {name!r}: cannot read the value")
            value, pos = vm.group(0), vm.end()
        fields[name] = value
        cm = re.compile(r"\s*,?").match(text, pos)
        pos = cm.end()
    if "title" not in fields:
        raise BibtexError(f"entry {key!r} has no title field")
    return BibEntry(kind, key, fields)


def latex_to_text(value: str) -> str:
    """Undo the common LaTeX escapes in BibTeX values: accents, braces, ``\\&``, ``--``."""
    def accent(m):
        base = m.group(2) or m.group(3)
        return unicodedata.normalize("NFC", base + _ACCENTS[m.group(1)])

    value = re.sub(r"\\([\"'`^~cv=.uH])\s*(?:\{\\?(\w)\}|\\?(\w))", accent, value)
    value = value.replace("\\&", "&").replace("\\%", "%").replace("\\_", "_").replace("---", "—").replace("--", "–")
    value = re.sub(r"\\[a-zA-Z]+\s*", "", value)
    value = value.replace("{", "").replace("}", "").replace("~", " ")
    return re.sub(r"\s+", " ", value).strip()


def split_authors(value: str) -> list[str]:
    names = []
    for part in re.split(r"\s+and\s+", latex_to_text(value)):
        part = part.strip()
        if not part:
            continue
        if "," in part:
            last, first = [x.strip() for x in part.split(",", 1)]
            part = f"{first} {last}".strip()
        names.append(part)
    return names


def _arxiv_of(f: dict[str, str]) -> Optional[str]:
    for candidate in (f.get("eprint", ""), f.get("journal", ""), f.get("url", ""), f.get("note", "")):
        m = re.search(r"(\d{4}\.\d{4,5})", candidate)
        if m:
            return m.group(1)
    return None


def fields_from_bibtex(entry: BibEntry) -> dict:
    f = entry.fields
    year = re.search(r"\d{4}", f.get("year", ""))
    venue = f.get("booktitle") or f.get("journal")
    return {
        "title": latex_to_text(f["title"]),
        "authors": split_authors(f.get("author", "")),
        "year": int(year.group(0)) if year else None,
        "venue": latex_to_text(venue) if venue else None,
        "arxiv": _arxiv_of(f),
        "doi": latex_to_text(f["doi"]).removeprefix("https://doi.org/") if f.get("doi") else None,
        "url": latex_to_text(f["url"]) if f.get("url") else None,
    }


def _ascii_slug(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def propose_id(title: str, authors: list[str], year: Optional[int], taken: set[str]) -> str:
    """``<firstauthor><year>-<slug>``: the acronym before a colon, else the first significant words; a free one."""
    last = _ascii_slug(authors[0].split()[-1]).replace("-", "") if authors else "anon"
    head = title.split(":")[0]
    if ":" in title and len(head.split()) <= 3:
        slug = _ascii_slug(head)
    else:
        words = [w for w in re.findall(r"[A-Za-z0-9]+", title) if w.lower() not in _STOP]
        slug = _ascii_slug(" ".join(words[:4]))
    base = f"{last or 'anon'}{year or ''}-{slug or 'paper'}"[:70].strip("-")
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def render_record(pid: str, fields: dict, summary: Optional[str], tags: list[str]) -> str:
    """The YAML text of a new record; strings are JSON-quoted, which is valid YAML."""
    q = lambda s: json.dumps(s, ensure_ascii=False)  # noqa: E731
    lines = [f"id: {pid}", f"title: {q(fields['title'])}", f"authors: [{', '.join(q(a) for a in fields['authors'])}]"]
    if fields.get("year"):
        lines.append(f"year: {fields['year']}")
    for name in ("venue", "arxiv", "doi", "url"):
        if fields.get(name):
            lines.append(f"{name}: {q(fields[name])}")
    if not fields.get("url") and fields.get("arxiv"):
        lines.append(f"url: {q('https://arxiv.org/abs/' + fields['arxiv'])}")
    lines.append(f"summary: {q(summary or SUMMARY_PLACEHOLDER)}")
    lines.append(f"tags: [{', '.join(tags)}]")
    lines.append("# introduces: {methods: [...], benchmarks: [...], models: [...]}   (see CONTRIBUTING.md)")
    return "\n".join(lines) + "\n"


def write_new_paper(root: Path, fields: dict, summary: Optional[str], tags: list[str], taken: set[str]) -> Path:
    """Create ``papers/<free id>.yaml``; never overwrites a file."""
    if not fields.get("title"):
        raise BibtexError("a title is needed (from the BibTeX entry or --title)")
    if not fields.get("authors"):
        raise BibtexError("at least one author is needed (from the BibTeX entry or --author)")
    existing = {p.stem for p in (root / "papers").glob("*.y*ml")}
    pid = propose_id(fields["title"], fields["authors"], fields.get("year"), taken | existing)
    path = root / "papers" / f"{pid}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x", encoding="utf-8") as fh:  # "x": fail rather than overwrite
        fh.write(render_record(pid, fields, summary, tags))
    return path
