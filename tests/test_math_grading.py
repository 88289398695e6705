"""Math grading under each template (issue 8, item 3): r1's bare <answer> content is
graded as well as a \\boxed{} answer, wrong answers are not accepted, and gold
answers math-verify reads as something degenerate are found at data load.

The answer set, tests/data/math_answers.jsonl: 155 competition-style gold answers
(integers, fractions, roots, pi, expressions in n, yes/no and words, lists, tuples,
intervals, sets, degrees, percentages, equations, matrices), each with renderings a
model might write and wrong answers. bench/math_grading.py prints the full table."""

import json
from pathlib import Path

import pytest

from rlvr.config import ConfigError
from rlvr.data import DataConfig, load_problems
from rlvr.rewards import RewardConfig, build_reward, gold_problem, math_answer, verify_math
from rlvr.tasks import Problem

ANSWERS = Path(__file__).parent / "data" / "math_answers.jsonl"
REASONING = "Let me work through this step by step. Checking the small cases and simplifying gives the result."
RENDER = {
    "qwen-boxed": lambda a: f"{REASONING} So the final answer is \\boxed{{{a}}}.",
    "r1": lambda a: f"<think>{REASONING}</think> <answer>{a}</answer>",
}


def problem(gold: str) -> Problem:
    return Problem(prompt="q", answer=gold, metadata={"question": "q", "answer": gold, "columns": {}})


def grade(template: str, golds: list[str], completions: list[str], workers: int = 2) -> list[float]:
    reward = build_reward(
        RewardConfig(functions=[{"name": "math_accuracy"}], workers=workers, timeout=30),
        DataConfig(path="m.jsonl", template=template),
    )
    try:
        _, parts = reward.detailed([problem(g) for g in golds], completions)
        assert parts["math_accuracy"].errors == 0 and parts["math_accuracy"].timeouts == 0
        return parts["math_accuracy"].scores
    finally:
        reward.close()


# ------------------------------------------------------------ the failures, through the reward


R1_RIGHT = [  # (gold, what an R1-style model writes in <answer>): every one scored 0 before
    ("2^{n-1}", "2^{n-1}"),
    ("\\frac{n(n-3)}{2}", "\\frac{n(n-3)}{2}"),
    ("\\frac{n(n-3)}{2}", "n(n-3)/2"),
    ("376, 625", "376, 625"),
    ("376, 625", "625, 376"),
    ("[0, 1)", "[0, 1)"),
    ("(-\\infty, 3]", "(-\\infty, 3]"),
    ("Yes", "yes"),
    ("yes", "YES"),
    ("\\text{even}", "even"),
    ("2\\sqrt{3}", "2\\sqrt{3}"),
    ("\\frac{\\pi}{6}", "pi/6"),
    ("(1, 2)", "(1, 2)"),
    ("\\{1,2\\}", "\\{2, 1\\}"),
    ("\\dfrac{5}{12}", "\\dfrac{5}{12}"),
    ("x^2 + 2x + 1", "(x+1)^2"),
]
R1_WRONG = [  # near misses that must still score 0
    ("2^{n-1}", "2^{n+1}"),
    ("\\frac{n(n-3)}{2}", "\\frac{n(n+3)}{2}"),
    ("376, 625", "376, 626"),
    ("376, 625", "376"),
    ("625", "376, 625"),
    ("[0, 1)", "[0, 1]"),
    ("(-\\infty, 3]", "(-\\infty, 3)"),
    ("Yes", "no"),
    ("No", "on"),  # math-verify alone reads both as n*o
    ("\\text{even}", "odd"),
    ("(1, 2)", "(2, 1)"),
    ("-7", "7"),
]


def test_r1_grades_bare_answers_like_boxed_ones():
    golds = [g for g, _ in R1_RIGHT + R1_WRONG]
    answers = [a for _, a in R1_RIGHT + R1_WRONG]
    want = [1.0] * len(R1_RIGHT) + [0.0] * len(R1_WRONG)
    r1 = grade("r1", golds, [RENDER["r1"](a) for a in answers])
    assert r1 == want, [(g, a, s) for g, a, s, w in zip(golds, answers, r1, want, strict=True) if s != w]
    boxed = grade("qwen-boxed", golds, [RENDER["qwen-boxed"](a) for a in answers])
    assert boxed == want, [(g, a, s) for g, a, s, w in zip(golds, answers, boxed, want, strict=True) if s != w]


def test_acceptance_and_false_accepts_on_the_answer_set():
    """r1 accepts right answers as often as qwen-boxed (>= 95%), and neither accepts over 1% of wrong ones."""
    rows = [json.loads(line) for line in ANSWERS.read_text().splitlines() if line.strip()]
    assert len(rows) >= 150
    golds, answers, right = [], [], []
    for r in rows:
        for a in r["correct"] + r["wrong"]:
            golds.append(r["gold"])
            answers.append(a)
            right.append(a in r["correct"])
    rate = {}
    for template, render in RENDER.items():
        scores = grade(template, golds, [render(a) for a in answers])
        accepted = [s for s, ok in zip(scores, right, strict=True) if ok]
        false = [(g, a) for g, a, s, ok in zip(golds, answers, scores, right, strict=True) if not ok and s >= 1]
        rate[template] = 100 * sum(accepted) / len(accepted)
        assert len(false) <= 0.01 * (len(right) - sum(right)), (template, false)
    assert rate["r1"] >= 95 and rate["r1"] >= rate["qwen-boxed"] - 1, rate


# ------------------------------------------------------------ what math-verify sees


@pytest.mark.parametrize(
    "completion, style, seen",
    [
        ("<think>so 4</think> <answer>2^{n-1}</answer>", "r1", "\\boxed{2^{n-1}}"),
        ("<think>a</think> <answer> 376, 625. </answer>", "r1", "\\boxed{376, 625}"),  # the period made it 625 alone
        ("<think>a</think> <answer>$\\frac{1}{2}$</answer>", "r1", "\\boxed{\\frac{1}{2}}"),
        ("<think>a</think> <answer>\\boxed{7}</answer>", "r1", "\\boxed{7}"),
        ("<think>a</think> <answer>so \\boxed{pi/2}</answer>", "r1", "so \\boxed{\\pi/2}"),
        (
            "<think>a</think> <answer>The answer is $x = 3$ or $x = 4$</answer>",
            "r1",
            "The answer is $x = 3$ or $x = 4$",
        ),
        ("<think>a</think> <answer>The final answer is 3*pi/4.</answer>", "r1", "\\boxed{3*\\pi/4}"),
        ("<think>a</think> <answer>costs \\$5</answer>", "r1", "\\boxed{costs \\$5}"),  # \$ is not a delimiter
        ("<think>a</think> <answer> </answer>", "r1", None),
        ("no tags, 4", "r1", None),
        ("so \\boxed{\\frac{1}{2}}.", "boxed", "so \\boxed{\\frac{1}{2}}."),
        ("so \\boxed{376, 625.} done", "boxed", "so \\boxed{376, 625} done"),
        ("It equals $\\frac12$.", "boxed", "It equals $\\frac12$."),
    ],
)
def test_math_answer_by_style(completion, style, seen):
    assert math_answer(completion, style) == seen


def test_text_answers_are_compared_as_words():
    assert verify_math("\\text{Yes}", "\\boxed{YES}") == 1.0
    assert verify_math("No", "\\boxed{on}") == 0.0
    assert verify_math("\\text{infinitely many}", "\\boxed{Infinitely many}") == 1.0
    assert verify_math("\\text{Evelyn}", "\\boxed{\\text{Carla}}") == 0.0
    assert verify_math("x", "\\boxed{x}") == 1.0  # a letter is math, not a word


# ------------------------------------------------------------ each distinct answer of a problem graded once (issue 14)


ENDINGS = [  # X: the answer; common endings, then ones where math-verify reads past or around the last box
    "So the final answer is \\boxed{X}.",
    "Therefore, the final answer is $\\boxed{X}$.",  # two patterns' matches end at the same place
    "Thus $\\boxed{X}$.",
    "Hence\n\\[\n\\boxed{X}\n\\]",
    "**Final Answer**\n\\[ \\boxed{X} \\]",
    "so $x = \\boxed{X}$",
    "We first guess \\boxed{0}, but checking all the cases again carefully gives \\boxed{X}.",
    "\\boxed{X}, \\boxed{X}",
    "$\\boxed{X}$ and $\\boxed{1}$",
    "\\boxed{X}. Hmm, the final answer is $7$.",
    "The final answer is $\\boxed{X}$. I hope it is correct.",
    "The final answer is $3$. I hope it is correct. Actually \\boxed{X}",
    "$\\boxed{X}$ percent",
    "Answer: \\boxed{X} \\quad (\\text{with } \\frac{1}{2})",
    "The answer is \\boxed{\\frac{3}{}}. Otherwise $X$.",  # a box that does not convert: read on to $X$
    "\\fbox{X}",
    "\\boxed{X",
]
PREFIXES = ["", "We have $a = 2$ and $b^2 = 9$, so $b = 3$. ", "First, 12 + 5 = 17.\n\n", "Note $\\frac{1}{2}$. "]


def reference(gold: str, answer: str) -> float:
    """math_accuracy's grade of one sample before issue 14, in-process: math-verify's
    verify(parse(gold), parse(answer)) on math_answer's text (text golds against a boxed text: as words)."""
    from math_verify import parse, verify

    from rlvr.rewards import last_boxed
    from rlvr.rewards.mathgrade import _parse_gold, _words

    want, boxed = _words(gold), last_boxed(answer)
    if want is not None and boxed is not None and _words(boxed, any_letters=True) is not None:
        return float(_words(boxed, any_letters=True) == want)
    return float(verify(_parse_gold(gold), parse(answer, parsing_timeout=None), timeout_seconds=None))


def corpus(every: int, endings: list[str], answers: int = 2) -> list[tuple[str, list[str]]]:
    """(gold, completions) per problem: right and wrong renderings of the answer set's golds (one row in
    `every`: integers, fractions, words, lists, intervals...) in each ending, after each reasoning."""
    rows = [json.loads(line) for line in ANSWERS.read_text().splitlines() if line.strip()][::every]
    out = []
    for r in rows:
        said = r["correct"][:answers] + r["wrong"][:answers]
        out.append((r["gold"], [p + e.replace("X", a) for a in said for e in endings for p in PREFIXES]))
    return out


def test_first_match_is_the_one_math_verify_tries_first(monkeypatch):
    """`_first_match` (the key) finds the match math-verify's own parse() hands to its converter first,
    and `_parse` reads what parse() reads."""
    import math_verify.parser as mv

    from rlvr.rewards.mathgrade import _first_match, _parse

    targets = [mv.LatexExtractionConfig(), mv.ExprExtractionConfig()]  # parse()'s default
    patterns = [p for ps, _ in mv.get_extraction_regexes(targets) for p, _ in ps]
    tried = []
    real = mv.extract_match
    monkeypatch.setattr(mv, "extract_match", lambda m, t: tried.append(m) or real(m, t))
    texts = [p + e.replace("X", a) for p in PREFIXES for e in ENDINGS for a in ("\\frac{7}{2}", "[0, 1)")]
    texts += ["no math at all", "it is 5, or 6", "Answer: $x=2$", "final answer is 3. I hope so", "$$\\boxed{2}$$"]
    for text in texts:
        tried.clear()
        parsed = mv.parse(text, parsing_timeout=None)
        calls = list(tried)
        mine, shared = _parse(text)  # the one pass grade_answer runs
        assert repr(mine) == repr(parsed) and [type(x) for x in mine] == [type(x) for x in parsed], text
        assert shared == (len(calls) == 1 and any(not isinstance(x, str) for x in parsed)), text  # 1st converted
        first = _first_match(text)
        if not calls:
            assert first is None, text
            continue
        assert first is not None, text
        assert first[1] == {k: v for k, v in calls[0].groupdict().items() if v is not None}, text
        assert patterns[first[0]] is calls[0].re, text


def grade_problems(problems: list[tuple[str, list[str]]], template: str = "qwen-boxed"):
    """Each problem's completions as one batch through math_accuracy: (scores per problem, grades run, samples)."""
    reward = build_reward(
        RewardConfig(functions=[{"name": "math_accuracy"}], workers=2, timeout=30),
        DataConfig(path="m.jsonl", template=template),
    )
    math = reward.components[0][2]
    try:
        out = []
        for gold, completions in problems:
            _, parts = reward.detailed([problem(gold)] * len(completions), completions)
            assert parts["math_accuracy"].errors == 0 and parts["math_accuracy"].timeouts == 0
            out.append(parts["math_accuracy"].scores)
        return out, math.grades.graded, math.grades.asked
    finally:
        reward.close()


def check_against_math_verify(problems, template: str = "qwen-boxed"):
    from rlvr.rewards import answer_style

    scores, graded, asked = grade_problems(problems, template)
    differ = []
    for (gold, completions), got in zip(problems, scores, strict=True):
        for c, s in zip(completions, got, strict=True):
            answer = math_answer(c, answer_style(template))
            if s != (reference(gold, answer) if answer else 0.0):
                differ.append((gold, c, s))
    assert differ == []
    return graded, asked


def test_deduplicated_grades_equal_math_verify_sample_by_sample():
    """Every sample's grade is math-verify's on that sample alone, while far fewer grades are run."""
    graded, asked = check_against_math_verify(corpus(52, ENDINGS, answers=1))
    assert graded < 0.5 * asked, (graded, asked)


def test_a_key_whose_first_match_does_not_convert_is_graded_text_by_text():
    """`\\boxed{\\frac{3}{}}` does not convert, so math-verify reads on to `$X$`: one key, different grades."""
    gold = "5"
    completions = [f"{p}The answer is \\boxed{{\\frac{{3}}{{}}}}. Otherwise ${x}$." for p in PREFIXES for x in "5678"]
    (scores,), graded, asked = grade_problems([(gold, completions)])
    assert scores == [float(c.endswith("$5$.")) for c in completions]
    assert graded > len({c.split("Otherwise")[1] for c in completions})


def test_text_golds_key_on_the_boxed_words():
    """Against a text gold the last box's words decide, also where math-verify's first match is elsewhere."""
    said = ("yes", "no", "YES", "on", "Yes.")
    completions = [f"So \\boxed{{{a}}}. Hmm, the final answer is $7$." for a in said]
    (scores,), _, _ = grade_problems([("Yes", completions)])
    assert scores == [1.0, 0.0, 1.0, 0.0, 1.0]


@pytest.mark.slow
def test_deduplicated_grades_equal_math_verify_on_the_whole_answer_set():
    # math-verify spends minutes on `$\\boxed{2^{n-1}}$ percent` (a symbolic percentage), before and now alike
    check_against_math_verify(corpus(1, [e for e in ENDINGS if "percent" not in e]))
    check_against_math_verify(corpus(3, ["<think>a</think> <answer>X</answer>", "<answer>$X$</answer>"]), "r1")
    check_against_math_verify(corpus(1, ENDINGS[:5], answers=3), "r1")  # a boxed answer in the tag


# ------------------------------------------------------------ degenerate golds at data load


DEGENERATE = [
    "sum_(i=1)^n i^3",
    "sum_{i=1}^n i",
    "prod_(i=1)^n i",
    "\\gcd(a, b)",
    "a \\equiv 1 \\pmod 3",
    "n mod 3",
    "n choose 2",
    "binom(n,k)",
    "10 USD",
    "?",
    "x \\to \\infty",
    "",
]
READ_AS_WRITTEN = [
    "\\frac{7}{7}",
    "2^0",
    "100\\%",
    "5 \\text{ cm}",
    "\\text{See solution}",
    "e^2",
    "3 + 4i",
    "\\mathbb{R}",
    "\\sum_{k=1}^{10} k",
    "(11,7)or(7,11)",
    "S_{MBCN}:S=7:32",
    "\\$10",
    "\\emptyset",
    "pi/2",
    "sqrt(3)",
]


@pytest.mark.parametrize("gold", DEGENERATE)
def test_degenerate_golds_are_found(gold):
    assert gold_problem(gold)


@pytest.mark.parametrize("gold", READ_AS_WRITTEN)
def test_odd_but_faithful_golds_are_not_called_degenerate(gold):
    assert gold_problem(gold) is None


def test_no_gold_of_the_answer_set_is_called_degenerate():
    golds = [json.loads(line)["gold"] for line in ANSWERS.read_text().splitlines() if line.strip()]
    assert {g: gold_problem(g) for g in golds if gold_problem(g)} == {}


def test_the_ascii_sum_gold_really_is_degenerate():
    """Why it matters: math-verify reads `sum_(i=1)^n i^3` as 1, so \\boxed{1} scores 1 and the true sum 0."""
    assert verify_math("sum_(i=1)^n i^3", "\\boxed{1}") == 1.0
    assert verify_math("sum_(i=1)^n i^3", "\\boxed{\\left(\\frac{n(n+1)}{2}\\right)^2}") == 0.0
    assert "reads as 1" in gold_problem("sum_(i=1)^n i^3")


def write_rows(path: Path, golds: list[str]) -> Path:
    path.write_text("".join(json.dumps({"problem": f"Problem {i}?", "answer": g}) + "\n" for i, g in enumerate(golds)))
    return path


GOLDS = ["12", "\\frac{n(n-3)}{2}", "sum_(i=1)^n i^3", "2^{n-1}", "yes", "\\gcd(a, b)", "[0, 1)", "376, 625"]


def test_data_load_warns_naming_the_rows(tmp_path, capsys):
    path = write_rows(tmp_path / "golds.jsonl", GOLDS)
    cfg = DataConfig(path=str(path), eval_path=str(path), columns={"prompt": "problem"})
    train, _ = load_problems(cfg)
    assert len(train) == len(GOLDS)
    err = capsys.readouterr().err
    assert err.count("WARNING") == 2  # once per file read: data.path, then data.eval_path
    first = err.splitlines()[0]
    assert first.startswith(
        f"rlvr: WARNING: data.path: {path}: 2 of 8 gold answers in column 'answer' are read by math-verify"
    )
    assert "row 3 'sum_(i=1)^n i^3' reads as 1: its variables" in first and "row 6 '\\\\gcd(a, b)'" in first
    assert "data.degenerate_golds: drop" in first


def test_data_load_drops_or_stops_or_skips(tmp_path, capsys):
    path = write_rows(tmp_path / "golds.jsonl", GOLDS)
    base = dict(path=str(path), eval_path=str(path), columns={"prompt": "problem"})
    train, evals = load_problems(DataConfig(**base, degenerate_golds="drop"))
    assert [p.metadata["row"] for p in train] == [1, 2, 4, 5, 7, 8] and len(evals) == 6
    assert "dropped these 2 rows" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"^data.path: .*golds.jsonl: 2 of 8 gold answers .* row 3 "):
        load_problems(DataConfig(**base, degenerate_golds="error"))
    train, _ = load_problems(DataConfig(**base, degenerate_golds="off"))
    assert len(train) == 8 and capsys.readouterr().err == ""


def test_many_degenerate_golds_name_the_first_five_and_count_the_rest(tmp_path, capsys):
    path = write_rows(tmp_path / "golds.jsonl", ["sum_(i=1)^n i^3"] * 12 + ["3"])
    load_problems(DataConfig(path=str(path), eval_path=str(path), columns={"prompt": "problem"}))
    first = capsys.readouterr().err.splitlines()[0]
    assert "12 of 13" in first and "row 5 " in first and "row 6 " not in first and "and 7 more rows" in first


def test_degenerate_golds_option_is_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="degenerate_golds"):
        DataConfig(degenerate_golds="ignore")
