"""`alignscope site` on this checkout: a cold run, then runs where nothing changed, and one after a result changed.

The site's inputs (records, results, matrix, model card, mkdocs.yml; no weights, no predictions) are
copied into a temporary folder, so this checkout's build/ and site/ are left alone. Each run is the
real command in a fresh interpreter, timed from outside (interpreter start, imports and the knowledge
base's validation included):

- cold: no memo (build/cache/site) and no build stamp, so every page and plot is made and mkdocs runs;
- no change: the same command again (target: about a second);
- one result changed: a metric of one record is edited, so its tables and plots are made again.

    python bench/bench_site_nochange.py --repeat 3
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from site_gen.watch import copy_site_inputs  # noqa: E402


def run_site(root: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "alignscope.cli", "site", "--root", str(root)], cwd=REPO,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"alignscope site failed:\n{proc.stdout}{proc.stderr}")
    return seconds, proc.stdout


def summary(out: str) -> str:
    """The command's own lines about generation and the build, on one line."""
    return "; ".join(line.strip() for line in out.splitlines() if line.startswith(("generated", "built", "site/")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="no-change runs to time (the median is reported)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="alignscope-bench-site-"))
    try:
        copy_site_inputs(REPO, root)
        records = sorted(p for p in (root / "results").rglob("seed*.json") if not p.name.endswith(".error.json"))
        cold, out = run_site(root)
        print(f"cold                   {cold:6.2f} s   ({summary(out)})")
        warm = []
        for _ in range(args.repeat):
            seconds, out = run_site(root)
            warm.append(seconds)
        print(f"no change, median      {statistics.median(warm):6.2f} s   (of {args.repeat}: "
              f"{', '.join(f'{s:.2f}' for s in warm)}; {summary(out)})")
        if records:
            data = json.loads(records[0].read_text(encoding="utf-8"))
            metric = sorted(data["metrics"])[0]
            data["metrics"][metric] = data["metrics"][metric] * 0.5
            records[0].write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            seconds, out = run_site(root)
            print(f"one result changed     {seconds:6.2f} s   ({records[0].relative_to(root)}: {summary(out)})")
        print(f"pages                  {sum(1 for _ in (root / 'build' / 'docs').rglob('*.md')):6d}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
