"""How often math_accuracy accepts a right answer and rejects a wrong one, per template.

Each problem of tests/data/math_answers.jsonl has a gold answer, renderings of it a
model might write (the gold's own form and equivalent ones) and wrong answers
(perturbed values, wrong sign, swapped or shortened lists, other interval ends).
Each answer is written as a completion of each template and graded by the
configured `math_accuracy` reward (worker pool, as in training):

* qwen-boxed: some reasoning, then `\\boxed{answer}`;
* r1: `<think>reasoning</think> <answer>answer</answer>`, the answer bare (as R1-style
  models write it), and, as a second row, `r1 (mixed)`: the answer written `$answer$`,
  `\\boxed{answer}` or `The answer is answer.` inside the tag, in turn.

`--before` also grades with the extraction that shipped before issue 8 (the tag's
content passed to math-verify as it is), reproduced here in-process.

`--math-verify-tests DIR`: also the (gold, prediction, expected) cases of
math-verify's own test files (a checkout of huggingface/Math-Verify) whose
prediction has a \\boxed{} answer: real MATH / NuminaMath / OpenThoughts answers,
written by people other than the author of our data.

    .venv/bin/python bench/math_grading.py --before [--math-verify-tests ../Math-Verify]
    .venv/bin/python bench/math_grading.py --load-time 1000   # cost of data.degenerate_golds at load
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "tests" / "data" / "math_answers.jsonl"
REASONING = "Let me work through this step by step. Checking the small cases and simplifying gives the result."


def qwen_boxed(answer: str) -> str:
    return f"{REASONING} So the final answer is \\boxed{{{answer}}}."


def r1(answer: str) -> str:
    return f"<think>{REASONING}</think> <answer>{answer}</answer>"


def r1_mixed(answer: str, i: int) -> str:
    inner = [f"${answer}$", f"\\boxed{{{answer}}}", f"The answer is {answer}."][i % 3]
    return f"<think>{REASONING}</think> <answer>{inner}</answer>"


def load(path: Path = DATA) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def cases(rows: list[dict]) -> list[tuple[str, str, str, bool]]:
    """(id, gold, answer, is_correct) for every rendering of every row."""
    out = []
    for r in rows:
        out += [(r["id"], r["gold"], a, True) for a in r["correct"]]
        out += [(r["id"], r["gold"], a, False) for a in r["wrong"]]
    return out


def math_verify_cases(repo: Path) -> list[tuple[str, str, str, bool]]:
    """(id, gold, boxed answer, expected) from math-verify's tests: golds written $...$, predictions with a box."""
    from rlvr.rewards import last_boxed

    out = []
    for f in sorted((repo / "tests").glob("test_*.py")):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "parametrize" and len(node.args) >= 2
            ):
                continue
            names = node.args[0].value if isinstance(node.args[0], ast.Constant) else ""
            if [n.strip() for n in str(names).split(",")][:3] != ["gold", "pred", "expected"]:
                continue
            for el in getattr(node.args[1], "elts", []):
                try:
                    gold, pred, expected = ast.literal_eval(el)[:3]
                except Exception:
                    continue
                if not (isinstance(gold, str) and isinstance(pred, str) and expected in (0, 1)):
                    continue
                g = gold.strip()
                for d in ("$$", "$"):
                    if g.startswith(d) and g.endswith(d) and len(g) > 2 * len(d):
                        g = g[len(d) : -len(d)].strip()
                        break
                if "$" in g or "\\boxed" in g or len(g) > 80 or pred.count("\\boxed") != 1:
                    continue  # a gold in prose, or several boxes in the prediction: not one answer
                answer = last_boxed(pred)
                if answer:
                    out.append((f"{f.stem}:{el.lineno}", g, answer.strip(), bool(expected)))
    return out


def before(gold: str, completion: str, template: str) -> float:
    """math_accuracy as shipped before issue 8: the tag's content, or the whole completion, to math-verify."""
    import logging

    from math_verify import parse, verify

    from rlvr.rewards import answer_tag

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    answer = answer_tag(completion) if template == "r1" else completion
    if not answer:
        return 0.0
    text = gold if ("$" in gold or "\\boxed" in gold or "\\(" in gold) else f"${gold}$"
    g = parse(text, parsing_timeout=None) or parse(gold, parsing_timeout=None)
    return float(verify(g, parse(answer, parsing_timeout=None), timeout_seconds=None))


def grade_now(template: str, golds: list[str], completions: list[str], workers: int) -> list[float]:
    from rlvr.data import DataConfig
    from rlvr.rewards import RewardConfig, build_reward
    from rlvr.tasks import Problem

    reward = build_reward(
        RewardConfig(functions=[{"name": "math_accuracy"}], workers=workers, timeout=30),
        DataConfig(path="bench.jsonl", template=template),
    )
    try:
        problems = [Problem("q", g, {"question": "q", "answer": g, "columns": {}}) for g in golds]
        _, parts = reward.detailed(problems, completions)
        return [float(s or 0.0) for s in parts["math_accuracy"].scores]
    finally:
        reward.close()


RENDER = {"qwen-boxed": lambda a, i: qwen_boxed(a), "r1": lambda a, i: r1(a), "r1 (mixed)": r1_mixed}


def measure(label: str, items: list[tuple[str, str, str, bool]], args) -> list[dict]:
    rows = []
    for name, render in RENDER.items():
        template = "qwen-boxed" if name == "qwen-boxed" else "r1"
        completions = [render(a, i) for i, (_, _, a, _) in enumerate(items)]
        golds = [g for _, g, _, _ in items]
        versions = {}
        if args.before:
            versions["before"] = [before(g, c, template) for g, c in zip(golds, completions, strict=True)]
        t = time.time()
        versions["now"] = grade_now(template, golds, completions, args.workers)
        for version, scores in versions.items():
            right = [s for s, (_, _, _, ok) in zip(scores, items, strict=True) if ok]
            wrong = [s for s, (_, _, _, ok) in zip(scores, items, strict=True) if not ok]
            missed = [(i, g, a) for s, (i, g, a, ok) in zip(scores, items, strict=True) if ok and s < 1]
            accepted = [(i, g, a) for s, (i, g, a, ok) in zip(scores, items, strict=True) if not ok and s >= 1]
            rows.append(
                {
                    "set": label,
                    "template": name,
                    "version": version,
                    "right": len(right),
                    "accept": 100 * sum(1 for s in right if s >= 1) / max(1, len(right)),
                    "wrong": len(wrong),
                    "false_accept": 100 * len(accepted) / max(1, len(wrong)),
                    "missed": missed,
                    "accepted": accepted,
                }
            )
        rows[-1]["seconds"] = time.time() - t
    return rows


def load_time(n: int, seed: int = 0) -> None:
    """Seconds load_problems spends on the degenerate-gold check for `n` rows: half integers (no parse),
    half our symbolic golds with their digits redrawn (distinct, so the cache does not help)."""
    import random
    import re
    import tempfile

    from rlvr.data import DataConfig, load_problems
    from rlvr.rewards import gold_problem

    t = time.time()
    gold_problem("\\frac{1}{2}")  # import math-verify and sympy before the clock starts (reported apart)
    first = time.time() - t
    rng = random.Random(seed)
    symbolic = [r["gold"] for r in load() if not re.fullmatch(r"-?\d+", r["gold"])]
    golds = []
    for i in range(n):
        if i % 2 == 0:
            golds.append(str(rng.randint(0, 999)))
        else:
            golds.append(re.sub(r"\d", lambda m: str(rng.randint(1, 9)), symbolic[i % len(symbolic)]))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "golds.jsonl"
        path.write_text(
            "".join(json.dumps({"prompt": f"Problem {i}?", "answer": g}) + "\n" for i, g in enumerate(golds))
        )
        small = Path(d) / "eval.jsonl"
        small.write_text(json.dumps({"prompt": "p", "answer": "1"}) + "\n")
        times = {}
        for mode in ("off", "warn"):
            t = time.time()
            load_problems(DataConfig(path=str(path), eval_path=str(small), degenerate_golds=mode))
            times[mode] = time.time() - t
    print(
        f"load_problems on {n} golds ({len(set(golds))} distinct, {n // 2} plain integers): "
        f"{times['off']:.2f} s without the check, {times['warn']:.2f} s with it "
        f"({1000 * (times['warn'] - times['off']) / n:.1f} ms a gold), after {first:.1f} s importing math-verify"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", action="store_true", help="also grade with the pre-issue-8 extraction")
    ap.add_argument("--math-verify-tests", type=Path, help="a Math-Verify checkout: also grade its test cases")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--show", type=int, default=15, help="misses and false accepts listed per row")
    ap.add_argument("--load-time", type=int, metavar="N", help="only time the degenerate-gold check on N golds")
    args = ap.parse_args()
    if args.load_time:
        return load_time(args.load_time)
    rows = load()
    sets = [(f"ours ({len(rows)} problems)", cases(rows))]
    if args.math_verify_tests:
        mv = math_verify_cases(args.math_verify_tests)
        sets.append((f"math-verify tests ({len(mv)} cases)", mv))
    table = []
    for label, items in sets:
        table += measure(label, items, args)
    print("\n| set | template | version | right answers | accepted | wrong answers | false accepts |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(
            f"| {r['set']} | {r['template']} | {r['version']} | {r['right']} | {r['accept']:.1f}% | "
            f"{r['wrong']} | {r['false_accept']:.1f}% |"
        )
    for r in table:
        if r["version"] != "now" or not (r["missed"] or r["accepted"]):
            continue
        print(
            f"\n{r['set']}, {r['template']}: {len(r['missed'])} right answers rejected, "
            f"{len(r['accepted'])} wrong answers accepted"
        )
        for i, g, a in r["missed"][: args.show]:
            print(f"  rejected  {i}: gold {g!r}  answer {a!r}")
        for i, g, a in r["accepted"][: args.show]:
            print(f"  ACCEPTED  {i}: gold {g!r}  answer {a!r}")


if __name__ == "__main__":
    main()
