"""The runner's index of the matrix, ``results/index.json``, read without the runner.

The runner writes the index beside the records whenever it plans the matrix: every cell of
``plugins/reproduce.yaml`` with the experiment that lists it, its *state* and the fingerprint the
code gives it now. The site reads the index to mark stale results and to list the cells that
failed or never ran, and so never imports the runner (nor torch). States:

- ``current``: the record matches the code, config, checkpoint and data;
- ``stale``: a record exists, but something it depends on changed since it ran;
- ``missing``: no record yet;
- ``failed``: the cell's last run raised; ``<cell>.error.json`` sits where the record would be;
- ``error``: the cell cannot even be planned (a missing checkpoint, say); its fingerprint is null.

A record under ``results/`` whose cell is not in the index is *not in the matrix*. A missing or
malformed index is a warning and marks nothing; so is a version this reader does not know.

>>> index = parse_results_index('{"version": 1, "fingerprint_version": 2, "matrix": "m.yaml", "cells": {'
...     '"a/b/c/d/seed0": {"experiment": "default", "state": "stale", "fingerprint": "' + "0" * 64 + '"}}}')
>>> index.stale, index.problems
(frozenset({'a/b/c/d/seed0'}), ())
>>> parse_results_index('{"version": 9, "cells": {}}').problems[0]  # doctest: +ELLIPSIS
'results/index.json: version 9, but this site reads version 1 only...'
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from plugins.api import ERROR_SUFFIX, INDEX_NAME, INDEX_VERSION

STATES = ("current", "stale", "missing", "failed", "error")
"""Every state a cell can be in, in the order the site lists them."""
_WHERE = f"results/{INDEX_NAME}"


@dataclass(frozen=True)
class IndexedCell:
    """One cell of the matrix as the runner last saw it."""

    cell: str  # model/benchmark/split/method/seed<k>, also its path under results/
    experiment: str  # the matrix experiment that lists it
    state: str  # one of STATES
    fingerprint: Optional[str]  # what the code gives now; None when the cell cannot be planned
    error: str = ""  # first line of the error, for states "failed" and "error"

    @property
    def error_file(self) -> str:
        """Where the runner keeps the failure's traceback (state ``failed``)."""
        return f"results/{self.cell}{ERROR_SUFFIX}"


@dataclass(frozen=True)
class ResultsIndex:
    """The parsed index; ``problems`` says why it is empty or partial (nothing is marked then)."""

    found: bool = False  # an index of a version this reader knows was read (its cells may still be few)
    cells: dict[str, IndexedCell] = field(default_factory=dict)
    fingerprint_version: Optional[int] = None
    matrix: Optional[str] = None  # the matrix file the runner planned, as it names it
    problems: tuple[str, ...] = ()

    @property
    def stale(self) -> frozenset[str]:
        return frozenset(c for c, e in self.cells.items() if e.state == "stale")

    def in_state(self, state: str) -> list[IndexedCell]:
        return [e for _, e in sorted(self.cells.items()) if e.state == state]

    def counts(self) -> dict[str, int]:
        """Cells per state, in the order of :data:`STATES`."""
        return {s: sum(e.state == s for e in self.cells.values()) for s in STATES}

    def stale_cells(self, records: Iterable[Any]) -> frozenset[str]:
        """Cells marked stale, plus records whose fingerprint is not the one the index gives their cell.

        The second case catches a record written or replaced after the index was (a pulled
        ``results/``): it cannot be current, since the code gives its cell another fingerprint.
        """
        out = set(self.stale)
        for r in records:
            entry = self.cells.get(r.cell)
            if entry is not None and entry.fingerprint is not None and entry.fingerprint != r.fingerprint:
                out.add(r.cell)
        return frozenset(out)

    def marked_stale(self, cells: Iterable[str]) -> "ResultsIndex":
        """This index with ``cells`` (listed ones) in state ``stale``: their results can no longer be trusted."""
        cells = set(cells)
        changed = {c: dataclasses.replace(e, state="stale") for c, e in self.cells.items() if c in cells}
        return dataclasses.replace(self, cells={**self.cells, **changed}) if changed else self

    def not_in_matrix(self, records: Iterable[Any]) -> list[str]:
        """Cells of records the index does not list (empty when there is no index to tell)."""
        if not self.found:
            return []
        return sorted({r.cell for r in records} - set(self.cells))


def parse_results_index(text: str, where: str = _WHERE) -> ResultsIndex:
    """Parse the index text; never raises: what cannot be used becomes a message in ``problems``."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        return ResultsIndex(problems=(f"{where}: not readable JSON ({exc}); no result is marked stale",))
    if not isinstance(data, dict):
        return ResultsIndex(problems=(f"{where}: expected a JSON object, found {type(data).__name__}; no result is marked stale",))
    version = data.get("version")
    if version != INDEX_VERSION:
        return ResultsIndex(problems=(
            f"{where}: version {version!r}, but this site reads version {INDEX_VERSION} only; no result is marked stale "
            "(update AlignScope, or rerun `alignscope reproduce` with this checkout to rewrite the index)",))
    raw_cells = data.get("cells")
    if not isinstance(raw_cells, dict):
        return ResultsIndex(problems=(f"{where}: 'cells' must be an object of cell name to entry; no result is marked stale",))
    problems: list[str] = []
    cells: dict[str, IndexedCell] = {}
    for name in sorted(raw_cells):
        entry, why = _cell(name, raw_cells[name])
        if entry is None:
            problems.append(f"{where} cells.{name}: {why}; the cell is left out")
        else:
            cells[name] = entry
    fp_version = data.get("fingerprint_version")
    matrix = data.get("matrix")
    return ResultsIndex(True, cells, fp_version if isinstance(fp_version, int) else None,
                        matrix if isinstance(matrix, str) else None, tuple(problems))


def _cell(name: str, entry: Any) -> tuple[Optional[IndexedCell], str]:
    if not isinstance(entry, dict):
        return None, f"expected an object, found {type(entry).__name__}"
    state = entry.get("state")
    if state not in STATES:
        return None, f"state {state!r} is not one of {', '.join(STATES)}"
    fingerprint = entry.get("fingerprint")
    if not (fingerprint is None or isinstance(fingerprint, str)):
        return None, "fingerprint must be a string or null"
    experiment = entry.get("experiment")
    error = entry.get("error") or ""
    if not isinstance(experiment, str) or not isinstance(error, str):
        return None, "experiment and error must be strings"
    first_line = error.strip().splitlines()[0] if error.strip() else ""
    return IndexedCell(name, experiment, state, fingerprint, first_line), ""


def read_results_index(results_dir: Path, has_records: bool = True) -> ResultsIndex:
    """``results_dir/index.json``; a missing file is a warning when there are records it should describe."""
    path = Path(results_dir) / INDEX_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if not has_records:
            return ResultsIndex()
        return ResultsIndex(problems=(f"{_WHERE} is missing: stale results cannot be told and none is marked "
                                      "(the runner writes it: alignscope reproduce)",))
    except (OSError, UnicodeDecodeError) as exc:
        return ResultsIndex(problems=(f"{_WHERE}: cannot be read ({exc}); no result is marked stale",))
    return parse_results_index(text)
