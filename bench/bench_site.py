"""Site generation at scale: a synthetic knowledge base of N papers, timed end to end.

Writes N synthetic paper records (with methods, benchmarks and reported results in the
proportions of the real knowledge base) beside a copy of the real taxonomy in a temporary
checkout, then times loading + validation, page generation and ``mkdocs build --strict``,
and reports the site's size, its largest page and the mean page size.

    python bench/bench_site.py --papers 10000
"""
from __future__ import annotations

import argparse
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from site_gen.load import load_knowledge_base  # noqa: E402
from site_gen.render import build_site, generate_checkout  # noqa: E402

WORDS = ("visual contrastive decoding hallucination grounding preference alignment attention token image object "
         "attribute relation caption benchmark instruction tuning adapter encoder prior language model").split()


def synthetic_papers(out: Path, n: int, families: list[str], levels: list[str], tags: list[str], seed: int = 0) -> None:
    rnd = random.Random(seed)
    ids = [f"synth{2018 + i % 8}-p{i:05d}" for i in range(n)]
    methods, benchmarks = [], []
    for i, pid in enumerate(ids):
        rec: dict = {
            "id": pid,
            "title": f"Synthetic paper {i}: " + " ".join(rnd.sample(WORDS, 6)),
            "authors": [f"Author{rnd.randrange(5000)} Surname{rnd.randrange(5000)}" for _ in range(rnd.randint(1, 6))],
            "year": 2018 + i % 8,
            "venue": rnd.choice(["CVPR", "NeurIPS", "ICLR", "ACL", "EMNLP", "arXiv"]),
            "arxiv": f"99{1 + i % 12:02d}.{i:05d}",  # 99xx: never a real modern arXiv id
            "summary": "A synthetic record for the scale benchmark. " + " ".join(rnd.choices(WORDS, k=40)),
            "tags": sorted(set(rnd.sample(tags, 2))),
            "cites": sorted(set(rnd.sample(ids[:i], min(i, 8)))),
        }
        intro: dict = {}
        if i % 10 == 0:  # about the real ratio of methods to papers
            mid = f"m{i:05d}"
            intro["methods"] = [{"id": mid, "name": f"Method {i}", "family": rnd.choice(families),
                                 "summary": "A synthetic method for the scale benchmark.", "changes": ["logits"],
                                 "third_model": False, "targets": {"levels": sorted(set(rnd.sample(levels, 2)))}}]
            methods.append(mid)
        if i % 100 == 0:
            bid = f"b{i:05d}"
            intro["benchmarks"] = [{"id": bid, "name": f"Bench {i}", "summary": "A synthetic benchmark for the scale benchmark.",
                                    "dimensions": {"object": True, "attribute": False, "relation": False, "cognition": False,
                                                   "instruction_following": False},
                                    "dimensions_source": "synthetic", "evaluator": "traditional", "splits": ["test"]}]
            benchmarks.append(bid)
        if intro:
            rec["introduces"] = intro
        if methods and benchmarks and i % 5 == 0:
            rec["reported"] = [{"model": "llava-1.5-7b", "benchmark": rnd.choice(benchmarks), "method": rnd.choice(methods),
                                "split": "test", "metrics": {"accuracy": round(rnd.uniform(50, 90), 1)}, "source": "Table 1"}]
        (out / f"{pid}.yaml").write_text(yaml.safe_dump(rec, sort_keys=False), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--papers", type=int, default=10_000)
    ap.add_argument("--keep", type=Path, help="build here and keep the result (default: a temporary folder)")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="alignscope-bench-"))
    try:
        # The real knowledge base (the taxonomy cites its papers) plus N synthetic papers.
        for name in ("taxonomy", "papers", "mkdocs.yml"):
            src = REPO / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
        kb0, _ = load_knowledge_base(REPO)
        families = sorted(k for k, v in kb0.taxonomy.items() if v.kind == "family")
        tags = sorted(kb0.taxonomy)
        t0 = time.perf_counter()
        synthetic_papers(root / "papers", args.papers, families, ["object", "attribute", "relation"], tags)
        t_write = time.perf_counter() - t0

        t0 = time.perf_counter()
        kb, issues = load_knowledge_base(root)
        t_load = time.perf_counter() - t0
        if issues:
            sys.exit("synthetic records do not validate:\n" + "\n".join(i.format() for i in issues[:20]))
        t0 = time.perf_counter()
        n_pages, _ = generate_checkout(root, kb)
        t_gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_site(root)
        t_build = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

        site = root / "site"
        files = [p for p in site.rglob("*") if p.is_file()]
        html = [p for p in files if p.suffix == ".html"]
        sizes = sorted((p.stat().st_size, p.relative_to(site).as_posix()) for p in html)
        record_pages = [s for s, rel in sizes if rel.startswith("papers/") and rel != "papers/index.html"]
        total = sum(p.stat().st_size for p in files)
        print(f"papers                 {len(kb.papers):>10,}")
        print(f"methods / benchmarks   {len(kb.methods):>10,} / {len(kb.benchmarks):,}")
        print(f"pages generated        {n_pages:>10,}")
        print(f"write synthetic YAML   {t_write:>10.2f} s")
        print(f"load + validate        {t_load:>10.2f} s")
        print(f"generate pages         {t_gen:>10.2f} s")
        print(f"mkdocs build --strict  {t_build:>10.2f} s   (peak RSS {peak_mb:,.0f} MB)")
        print(f"site size              {total / 1e6:>10.1f} MB in {len(files):,} files")
        print(f"search index           {(site / 'search' / 'search_index.json').stat().st_size / 1e6:>10.1f} MB")
        print(f"paper page, median     {statistics.median(record_pages) / 1e3:>10.1f} KB")
        for size, rel in sizes[::-1][:3]:
            print(f"large page             {size / 1e3:>10.1f} KB ({rel})")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
