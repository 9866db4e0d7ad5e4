"""Cross-check ``plugins.benchmarks.pope`` against the official POPE files and code (run by hand, not a test).

    python scripts/crosscheck_pope.py --pope-dir ../shared/data/pope [--official-evaluate evaluate.py]

1. Loads ``coco_pope_{random,popular,adversarial}.json`` from ``--pope-dir`` with our loader and
   prints counts, label balance, distinct images and questions per image, and whether writing
   the questions back reproduces the file byte for byte (up to CRLF line ends).
2. With ``--official-evaluate`` (a copy of ``evaluate.py`` from github.com/RUCAIBox/POPE), runs
   that script unchanged except for its two path variables: once per tricky answer, to compare
   the parsed answer, and once on seeded answers to every question of each split, to compare
   TP/FP/TN/FN and the printed metrics with :func:`pope_metrics`.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugins.benchmarks.pope import (POPE_SPLITS, answer_clarity, load_pope_split,  # noqa: E402
                                     parse_pope_answer, pope_metrics, write_pope_questions)

TRICKY = ["Yes.", "No, there is not.", "There is no dog.", "I don't know", "I don't know.", "yes and no", "",
          "NO", "No", "no", "Not really.", "Nope", "no\n", "No.\nThere is a cat.", "Yes. No.", "Yes, no.",
          "There is a dog, not a cat.", "yes", "Yes, there is a dog in the image.", "Not sure", "not sure",
          "I'm not sure.", "no!", "There is a dog in the image. No cat.", "  no  ", "no,", "No\tthere is not"]


def run_official(evaluate_src: str, answers: list[str], labels: list[str], work: Path) -> dict[str, float]:
    """Run the official evaluate.py on ``answers``; returns what it printed (counts, then metrics)."""
    ans_file, label_file, script = work / "ans.json", work / "label.json", work / "evaluate.py"
    ans_file.write_text("".join(json.dumps({"question": "q", "answer": a}) + "\n" for a in answers), encoding="utf-8")
    label_file.write_text("".join(json.dumps({"label": l}) + "\n" for l in labels), encoding="utf-8")
    src = evaluate_src.replace("ans_file = ''", f"ans_file = {str(ans_file)!r}", 1)
    src = src.replace("label_file = ''", f"label_file = {str(label_file)!r}", 1)
    script.write_text(src, encoding="utf-8")
    # The official script divides by zero when a count is 0; the TP/FP/TN/FN line is printed before that.
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True).stdout.splitlines()
    tp, fp, tn, fn = (int(x) for x in out[1].split())
    result: dict[str, float] = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    names = {"Accuracy": "accuracy", "Precision": "precision", "Recall": "recall", "F1 score": "f1", "Yes ratio": "yes_ratio"}
    for line in out[2:]:
        key, _, value = line.partition(": ")
        result[names[key]] = float(value)
    return result


def seeded_answers(labels: list[str], seed: int) -> list[str]:
    """Plausible model answers: mostly right, some wrong, some verbose, some quirky."""
    rng = random.Random(seed)
    yes = ["Yes", "Yes.", "Yes, there is.", "yes", "There is one in the image."]
    no = ["No", "No.", "No, there is not.", "There is no such object.", "no"]
    odd = ["NO", "", "I don't know.", "Not really.", "yes and no", "Nope"]
    out = []
    for label in labels:
        r = rng.random()
        pool = odd if r < 0.1 else (yes if (label == "yes") == (r < 0.8) else no)
        out.append(rng.choice(pool))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pope-dir", type=Path, required=True)
    ap.add_argument("--official-evaluate", type=Path)
    args = ap.parse_args()
    ok = True
    splits = {}
    for split in POPE_SPLITS:
        s = load_pope_split(args.pope_dir, split)
        splits[split] = s
        labels = Counter(q.label for q in s.questions)
        per_image = Counter(q.image for q in s.questions)
        per_image_labels = Counter((q.image, q.label) for q in s.questions)
        balanced = all(n == 3 for n in per_image_labels.values()) and len(per_image_labels) == 2 * len(per_image)
        ids = [q.question_id for q in s.questions]
        with tempfile.TemporaryDirectory() as tmp:
            copy = write_pope_questions(Path(tmp) / s.question_file.name, s.questions)
            written, original = copy.read_bytes(), s.question_file.read_bytes()
        # The official popular and adversarial files end their lines with CRLF, random with LF; we write LF.
        same_bytes = written == original or written == original.replace(b"\r\n", b"\n")
        line_ends = "CRLF" if b"\r\n" in original else "LF"
        print(f"{split:12s} file={s.question_file.name} lines={len(s.questions)} yes={labels['yes']} no={labels['no']} "
              f"images={len(per_image)} per_image={sorted(set(per_image.values()))} 3yes+3no_each={balanced} "
              f"ids={min(ids)}..{max(ids)} line_ends={line_ends} round_trip_identical_up_to_line_ends={same_bytes}")
        ok &= len(s.questions) == 3000 and labels == {"yes": 1500, "no": 1500} and len(per_image) == 500 and balanced and same_bytes
    if args.official_evaluate:
        src = args.official_evaluate.read_text(encoding="utf-8")
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            for answer in TRICKY:
                official = run_official(src, [answer], ["yes"], work)
                official_parse = "yes" if official["tp"] == 1 else "no"
                mine = parse_pope_answer(answer)
                print(f"parse {answer!r:42s} official={official_parse:3s} ours={mine:3s} clarity={answer_clarity(answer)}"
                      + ("" if mine == official_parse else "   MISMATCH"))
                ok &= mine == official_parse
            for i, (split, s) in enumerate(splits.items()):
                labels = [q.label for q in s.questions]
                answers = seeded_answers(labels, seed=i)
                official = run_official(src, answers, labels, work)
                mine = pope_metrics(answers, labels)
                same = all(abs(official[k] - mine[k]) < 1e-12 for k in official)
                print(f"metrics {split:12s} official={official} ours_unclear_ratio={mine['unclear_ratio']:.4f} "
                      f"misparsed={mine['misparsed']} agree={same}")
                ok &= same
    print("ALL CHECKS PASSED" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
