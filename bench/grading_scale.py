"""Grading a paper-size eval with math_accuracy: 821 problems x 256 samples, synthetic completions.

The paper's eval (Omni-MATH-Rule test, 821 problems, n = 256) is 210k grades per model. Each
problem here gets a gold answer of tests/data/math_answers.jsonl (its digits permuted per problem,
so that golds differ) and 256 completions written as an RL-trained model writes them: reasoning of
log-normal length (median ~1,400 characters: inline and display math, numbers, step headers),
then a final answer from a skewed distribution over a handful of distinct answers (right
renderings, wrong ones, near misses; the problem's difficulty sets how many), mostly in one
ending style of the model's (`$\\boxed{X}$.`, `\\[ \\boxed{X} \\]`, ...), sometimes another. Some
are not gradable the easy way: truncated (no box, long), an unparseable box, an earlier boxed
guess.

* now: the configured `math_accuracy` reward (2 grading workers), one call per problem as `rlvr
  eval` makes at n = 256 (its cross-call cache cleared each call: within-problem deduplication
  only). Prints the wall time, the CPU time, the distinct-answer ratio (grades run / samples).
* before: the grading that shipped before (every sample graded in the worker pool; math-verify's
  own lru caches and the gold's as they were) on the first `--before` problems, in order, and
  the extrapolation to the eval; the grades are compared with now's.
* `--check N`: N random samples graded in-process, one by one, with math-verify as math_accuracy
  graded before (verify(parse(gold), parse(math_answer(completion)))), against the reward's grade.

    .venv/bin/python bench/grading_scale.py [--problems 821] [--before 155] [--check 2000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "tests" / "data" / "math_answers.jsonl"

SENTENCES = [
    "Let $x$ be the number of {w} we are looking for.",
    "Then $x + {a} = {b}$, so $x = {c}$.",
    "We have\n\\[\n{a}x^2 + {b}x - {c} = 0.\n\\]",
    "By the quadratic formula, $x = \\frac{{-{b} \\pm \\sqrt{{{b}^2 + 4 \\cdot {a} \\cdot {c}}}}}{{2 \\cdot {a}}}$.",
    "Checking the case $n = {a}$: ${a}^2 = {a2}$, which works.",
    "So the total is {a} + {b} = {d}.",
    "Wait, let me double-check this step.",
    "Substituting back,\n\\[\nf({a}) = {b} \\cdot {a} - {c} = {e}.\n\\]",
    "Since $\\gcd({a}, {b}) = 1$, the fraction $\\frac{{{a}}}{{{b}}}$ is already in lowest terms.",
    "The area is $\\frac{{1}}{{2}} \\cdot {a} \\cdot {b} = {f}$ square units.",
    "Hmm, that gives {a} {w}, but the problem says there are {b} of them, so I made an error above.",
    "Now consider the remainder modulo {a}: $ {b} \\equiv {g} \\pmod{{{a}}}$.",
    "This means each of the {a} {w} contributes {b}, for {f} in all.",
    "Let me recount: {a}, {b}, {c}, and then {d}.",
]
WORDS = ["apples", "triangles", "paths", "integers", "coins", "students", "tiles", "subsets"]
ENDINGS = [  # how a model ends; X: the final answer
    "Therefore, the final answer is $\\boxed{X}$.",
    "\n\n**Final Answer**\n\\[\n\\boxed{X}\n\\]",
    "So the answer is \\boxed{X}.",
    "Thus, the answer is:\n\\[\n\\boxed{X}\n\\]",
    "The final answer is $\\boxed{X}$. I hope it is correct.",
    "\\[ \\boxed{X} \\]",
]
BROKEN = ["\\boxed{\\frac{3}{}}", "\\boxed{?}", "\\boxed{\\text{undefined}", "\\boxed{ }"]  # unparseable boxes


def reasoning(rng: random.Random, chars: int) -> str:
    out, n, step = [], 0, 1
    while n < chars:
        if rng.random() < 0.12:
            s = f"\n\n**Step {step}:** "
            step += 1
        else:
            a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 999)
            s = rng.choice(SENTENCES).format(
                a=a, b=b, c=c, a2=a * a, d=a + b, e=b * a - c, f=a * b // 2, g=b % a, w=rng.choice(WORDS)
            )
            s += " " if rng.random() < 0.8 else "\n\n"
        out.append(s)
        n += len(s)
    return "".join(out)


def permute_digits(text: str, perm: dict[str, str]) -> str:
    return re.sub(r"\d", lambda m: perm[m.group()], text)


def near_miss(rng: random.Random, answer: str) -> str:
    digits = [m.start() for m in re.finditer(r"\d", answer)]
    if not digits:
        return answer + " + 1"
    i = rng.choice(digits)
    return answer[:i] + str((int(answer[i]) + rng.randint(1, 9)) % 10) + answer[i + 1 :]


def corpus(problems: int, n: int, seed: int = 0, median: int = 1400, hard: bool = False):
    """(gold, [n completions]) per problem, and the kinds of its samples. `hard`: every problem hard
    for the model, 20-60 distinct answers (near misses) with a flat distribution, as a weak model's."""
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    for p in range(problems):
        row = rows[p % len(rows)]
        digits = list("123456789")
        rng.shuffle(digits)
        perm = dict(zip("0123456789", ["0"] + digits, strict=True))
        gold = permute_digits(row["gold"], perm)
        pool = [permute_digits(a, perm) for a in row["correct"] + row["wrong"]]
        pool += [near_miss(rng, gold) for _ in range(4)]
        difficulty = rng.random()
        k = min(len(pool), 1 + int(rng.expovariate(1 / (1 + 7 * difficulty))))
        if hard:
            pool = list(dict.fromkeys(pool + [near_miss(rng, near_miss(rng, gold)) for _ in range(120)]))
            k = min(len(pool), rng.randint(20, 60))
        answers = rng.sample(pool, k)
        if rng.random() > difficulty:  # an easy problem: the right answer is the mode
            answers[0] = permute_digits(row["correct"][0], perm)
        weights = [1 / (r + 1) ** (0.8 if hard else 1.5) for r in range(k)]
        style = rng.randrange(len(ENDINGS))  # the model's usual ending
        completions, kinds = [], []
        for _ in range(n):
            chars = int(min(8000, max(200, median * rng.lognormvariate(0, 0.6))))
            text = reasoning(rng, chars)
            u = rng.random()
            if u < 0.03:  # truncated at the length limit: no box
                completions.append(text + reasoning(rng, 6000)[: rng.randint(1000, 6000)])
                kinds.append("truncated")
                continue
            if u < 0.05:
                completions.append(text + f"So the answer is {rng.choice(BROKEN)}.")
                kinds.append("unparseable box")
                continue
            answer = rng.choices(answers, weights)[0]
            ending = ENDINGS[style] if rng.random() < 0.8 else rng.choice(ENDINGS)
            if u < 0.07:
                text = f"At first I get \\boxed{{{rng.choice(pool)}}}. " + text
            completions.append(text + ending.replace("X", answer))
            kinds.append("boxed")
        yield gold, completions, kinds


def before_grade(gold: str, answer: str) -> float:
    """math_accuracy's grade as shipped before: verify_math of PR history, every sample on its own."""
    import logging

    from math_verify import parse, verify

    from rlvr.rewards.extract import last_boxed
    from rlvr.rewards.mathgrade import _parse_gold, _words

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    g = _parse_gold(gold)
    if not g:
        raise ValueError(f"math-verify cannot parse the gold answer {gold!r}")
    want = _words(gold)
    boxed = last_boxed(answer)
    if want is not None and boxed is not None:
        said = _words(boxed, any_letters=True)
        if said is not None:
            return float(said == want)
    return float(verify(g, parse(answer, parsing_timeout=None), timeout_seconds=None))


def pool_cpu(pool) -> float:
    """CPU seconds the live workers of a WorkerPool have used (from /proc; Linux)."""
    total = 0
    for w in pool._idle:
        if w is not None and w.alive:
            fields = Path(f"/proc/{w.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def build(workers: int):
    from rlvr.data import DataConfig
    from rlvr.rewards import RewardConfig, build_reward

    return build_reward(
        RewardConfig(functions=[{"name": "math_accuracy"}], workers=workers, timeout=30),
        DataConfig(path="bench.jsonl", template="qwen-boxed"),
    )


def problem(gold: str):
    from rlvr.tasks import Problem

    return Problem("q", gold, {"question": "q", "answer": gold, "columns": {}})


def grade_now(args) -> dict:
    """The corpus through math_accuracy, one call per problem; wall and CPU of grading alone."""
    total = args.problems * args.n
    picked = set(random.Random(1).sample(range(total), min(total, args.check)))
    out = {"kept": [], "first": [], "kinds": {}, "chars": 0, "wall": 0.0, "cpu": 0.0}
    reward = build(args.workers)
    math = reward.components[0][2]
    try:
        reward.detailed([problem("1")] * 2, ["\\boxed{1}", "\\boxed{2}"])  # start the workers before the clock
        workers = pool_cpu(math.pool)
        math.grades.graded = math.grades.asked = 0
        for p, (gold, completions, kinds) in enumerate(
            corpus(args.problems, args.n, median=args.median_chars, hard=args.hard)
        ):
            t, c = time.perf_counter(), time.process_time()
            math.grades.cache.clear()  # within-problem deduplication only: golds differ in the real eval
            _, parts = reward.detailed([problem(gold)] * len(completions), completions)
            out["wall"] += time.perf_counter() - t
            out["cpu"] += time.process_time() - c
            s = parts["math_accuracy"]
            assert s.errors == 0 and s.timeouts == 0, (s.errors, s.timeouts, s.tracebacks[:1])
            if p < args.before:
                out["first"].append(s.scores)
            for i, (text, k) in enumerate(zip(completions, kinds, strict=True)):
                out["kinds"][k] = out["kinds"].get(k, 0) + 1
                out["chars"] += len(text)
                if p * args.n + i in picked:
                    out["kept"].append((gold, text, float(s.scores[i])))
            if (p + 1) % 100 == 0:
                print(f"  {p + 1} problems, {out['wall']:.0f} s grading", flush=True)
        out["graded"], out["asked"] = math.grades.graded, math.grades.asked
        out["cpu"] += pool_cpu(math.pool) - workers
    finally:
        reward.close()
    return out


def grade_before(args) -> dict:
    """The first `--before` problems of the same corpus the old way: every sample through the pool, in order."""
    from rlvr.rewards import math_answer
    from rlvr.workers import WorkerPool

    out = {"grades": [], "wall": 0.0, "cpu": 0.0, "n": 0}
    pool = WorkerPool("grading_scale:before_grade", workers=args.workers, timeout=30, warmup=("1", "\\boxed{1}"))
    try:
        pool.map([("1", "\\boxed{1}")] * args.workers)
        workers = pool_cpu(pool)
        for gold, completions, _ in corpus(args.before, args.n, median=args.median_chars, hard=args.hard):
            t, c = time.perf_counter(), time.process_time()
            jobs = [(gold, a) for a in (math_answer(x, "boxed") for x in completions) if a]
            got = pool.map(jobs)
            out["wall"] += time.perf_counter() - t
            out["cpu"] += time.process_time() - c
            out["grades"].append([float(v) if st == "ok" else None for st, v in got])
            out["n"] += len(completions)
        out["cpu"] += pool_cpu(pool) - workers
    finally:
        pool.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=821)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--before",
        type=int,
        default=155,
        help="problems graded the old way too (0: none); 155: "
        "each gold of the answer set once (they come in order: integers first)",
    )
    ap.add_argument("--check", type=int, default=0, help="random samples compared with math-verify one by one")
    ap.add_argument("--median-chars", type=int, default=1400, help="median reasoning length in characters")
    ap.add_argument("--hard", action="store_true", help="every problem gets 20-60 distinct answers")
    ap.add_argument("--out", type=Path, help="also write the summary here (markdown)")
    args = ap.parse_args()
    total = args.problems * args.n
    now = grade_now(args)
    lines = [
        f"# Grading a paper-size eval: {args.problems} problems x {args.n} samples = {total:,} grades",
        "",
        f"`{' '.join(['python', 'bench/grading_scale.py'] + sys.argv[1:])}`; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end (other jobs share the machine); {args.workers} grading workers; "
        f"completions: mean {now['chars'] / total:,.0f} characters; "
        + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in sorted(now["kinds"].items())),
        "",
        f"- now: **{now['wall']:.0f} s** wall for the eval ({1000 * now['wall'] / total:.2f} ms a sample); "
        f"{now['graded']:,} grades run for {now['asked']:,} samples: distinct-answer ratio "
        f"**{now['graded'] / now['asked']:.3f}**; CPU {now['cpu']:.0f} s (this process while grading and its "
        f"workers, their start left out): {1000 * now['cpu'] / total:.2f} ms a sample",
    ]
    if args.before:
        old = grade_before(args)
        per, cpu = old["wall"] / old["n"], old["cpu"] / old["n"]
        differ = sum(
            1 for a, b in zip(old["grades"], now["first"], strict=True) for x, y in zip(a, b, strict=True) if x != y
        )
        lines.append(
            f"- before (every sample graded, the first {args.before} problems, {old['n']:,} samples, in order): "
            f"{1000 * per:.2f} ms a sample wall, {1000 * cpu:.2f} ms CPU: **{per * total:.0f} s** for the eval "
            f"({per * total / now['wall']:.2f}x now's wall, {cpu * total / now['cpu']:.2f}x its CPU); "
            f"{differ} grades differ from now's"
        )
    if args.check:
        from rlvr.rewards import math_answer

        t = time.perf_counter()
        bad = [(g, c[-120:], s) for g, c, s in now["kept"] if before_grade(g, math_answer(c, "boxed")) != s]
        lines.append(
            f"- check: {len(now['kept'])} random samples graded one by one in-process with math-verify "
            f"({1000 * (time.perf_counter() - t) / max(1, len(now['kept'])):.1f} ms each): "
            f"**{len(bad)} differ** from the reward's grade"
        )
        lines += [f"  - DIFFERS: {b!r}" for b in bad[:10]]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
