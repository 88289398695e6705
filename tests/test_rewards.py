"""Rewards on real answers: math-verify on equivalent forms, HumanEval's canonical
solutions in the sandbox, reasoning-gym's scorers, TRL-style callables, and
failures that score 0, are counted, and never stop the caller."""

import re

import pytest
import torch
from pydantic import ValidationError

from rlvr.config import ConfigError
from rlvr.data import DataConfig, load_problems
from rlvr.rewards import (
    RewardConfig,
    RewardRunner,
    WeightedReward,
    build_program,
    build_reward,
    extract_code,
    last_boxed,
    overlong_penalty,
    reasoning_gym_reward,
)
from rlvr.tasks import Problem, humaneval_problems

MATH_DATA = DataConfig(path="math.jsonl")  # build_reward reads only source/template/columns


def math_problem(gold: str) -> Problem:
    return Problem(prompt="q", answer=gold, metadata={"question": "q", "answer": gold, "columns": {}})


@pytest.fixture(scope="module")
def math_reward():
    cfg = RewardConfig(functions=[{"name": "math_accuracy"}, {"name": "math_format", "weight": 0.5}], workers=2)
    r = build_reward(cfg, MATH_DATA)
    yield r
    r.close()


def test_math_verify_accepts_equivalent_forms(math_reward):
    gold = "\\frac{1}{2}"
    completions = [
        "We get \\boxed{\\frac{1}{2}}.",
        "so the answer is \\boxed{0.5}",
        "as a percentage: \\boxed{50\\%}",
        "\\boxed{\\dfrac{1}{2}}",
        "The probability is $\\frac12$.",  # no box: math-verify still finds it; the format reward does not
        "\\boxed{0.6}",
        "\\boxed{2}",
        "I do not know.",
    ]
    rewards, info = RewardRunner(math_reward)([math_problem(gold)] * len(completions), completions)
    assert rewards.tolist() == [1.5, 1.5, 1.5, 1.5, 1.0, 0.5, 0.5, 0.0]
    assert info["reward/math_accuracy"] == pytest.approx(5 / 8)
    assert info["reward/math_format"] == pytest.approx(6 / 8)
    assert info["reward/errors"] == 0 and info["reward/timeouts"] == 0


def test_math_verify_gold_in_any_common_form(math_reward):
    cases = [
        ("0.5", "\\boxed{\\frac{1}{2}}"),
        ("50\\%", "\\boxed{0.5}"),
        ("$x^2+1$", "\\boxed{1 + x^2}"),
        ("\\sqrt{2}", "\\boxed{2^{1/2}}"),
        ("12", "\\boxed{12}"),
        ("12", "\\boxed{13}"),
    ]
    scores, parts = math_reward.detailed([math_problem(g) for g, _ in cases], [c for _, c in cases])
    assert parts["math_accuracy"].scores == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_math_grading_timeout_scores_zero_is_counted_and_recovers():
    cfg = RewardConfig(functions=[{"name": "math_accuracy", "timeout": 1.0}], workers=1)
    reward = build_reward(cfg, MATH_DATA)
    try:
        runner = RewardRunner(reward)
        # sympy tries to evaluate the tower; math-verify's own alarm is off, ours kills the worker
        rewards, info = runner([math_problem("1")] * 2, ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{1}"])
        assert rewards.tolist() == [0.0, 1.0]
        assert info["reward/timeouts"] == 1 and info["reward/errors"] == 0
        rewards, info = runner([math_problem("3")], ["\\boxed{3}"])
        assert rewards.tolist() == [1.0] and info["reward/timeouts"] == 0
    finally:
        reward.close()


def test_unparseable_gold_is_an_error_not_a_crash(math_reward, capsys):
    runner = RewardRunner(math_reward)
    rewards, info = runner([math_problem(""), math_problem("2")], ["\\boxed{1}", "\\boxed{2}"])
    assert rewards.tolist() == [0.5, 1.5]
    assert info["reward/errors"] == 1
    assert "cannot parse the gold answer" in capsys.readouterr().out


def test_format_reward_for_the_r1_template():
    reward = build_reward(RewardConfig(functions=[{"name": "math_format"}]), DataConfig(path="m.jsonl", template="r1"))
    completions = [
        "<think>2+2</think> <answer>4</answer>",
        " <think>a</think>\n<answer> 4 </answer>\n",
        "<answer>4</answer>",
        "<think>x</think><answer></answer>",
        "<think>x</think> 4",
    ]
    assert reward(["p"] * 5, completions) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_r1_template_grades_the_answer_tag():
    reward = build_reward(
        RewardConfig(functions=[{"name": "math_accuracy"}], workers=1), DataConfig(path="m.jsonl", template="r1")
    )
    try:
        scores = reward(
            [math_problem("4")] * 3,
            ["<think>it is 5? no</think> <answer>4</answer>", "<think>so 4</think> <answer>5</answer>", "4"],
        )
        assert scores == [1.0, 0.0, 0.0]  # the answer is the tag's, not a number in the reasoning
        # a bare answer in the tag is read as LaTeX, as if boxed (before: 2^{n-1} was read as 2, [0, 1) as 1)
        golds = ["2^{n-1}", "2^{n-1}", "[0, 1)", "[0, 1)", "Yes", "Yes"]
        tags = ["2^{n-1}", "2^n", "[0, 1)", "[0, 1]", "yes", "no"]
        scores = reward([math_problem(g) for g in golds], [f"<think>t</think> <answer>{a}</answer>" for a in tags])
        assert scores == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    finally:
        reward.close()


def test_a_new_template_with_the_tag_answer_style_is_graded_by_the_tag_rule(monkeypatch):
    """The answer style comes from templates.ANSWER_STYLE, not from the template's name."""
    from rlvr import templates

    monkeypatch.setitem(templates.TEMPLATES, "tagged", "{question}\nPut the answer in <answer></answer>.")
    monkeypatch.setitem(templates.ANSWER_STYLE, "tagged", templates.ANSWER_STYLE["r1"])
    tagged, boxed = "<think>it is 5? no</think> <answer>4</answer>", "so it is 5? no, \\boxed{4}"
    fmt = build_reward(RewardConfig(functions=[{"name": "math_format"}]), DataConfig(path="m.jsonl", template="tagged"))
    assert fmt(["p"] * 2, [tagged, boxed]) == [1.0, 0.0]
    acc = build_reward(
        RewardConfig(functions=[{"name": "math_accuracy"}], workers=1), DataConfig(path="m.jsonl", template="tagged")
    )
    try:
        assert acc([math_problem("4")] * 2, [tagged, boxed]) == [1.0, 0.0]  # boxed: no <answer>, no answer
    finally:
        acc.close()
    data = DataConfig(task="chain_sum", train_size=3, eval_size=1, template="tagged")
    train, _ = load_problems(data)
    rg = build_reward(RewardConfig(), data)
    assert rg(train, [f"<think>t</think> <answer>{p.answer}</answer>" for p in train]) == [1.0] * 3
    assert rg(train, [f"\\boxed{{{p.answer}}}" for p in train]) == [0.0] * 3


def test_last_boxed_balances_braces():
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{1}{2}} end") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{unclosed") is None and last_boxed("none") is None


# ------------------------------------------------------------ reasoning-gym


def test_reasoning_gym_scores_real_answers():
    train, _ = load_problems(DataConfig(task="chain_sum", train_size=6, eval_size=1))
    reward = build_reward(RewardConfig(), DataConfig())  # default: the task's own scorer
    wrong = [str(int(p.answer) + 1) for p in train]
    assert reward(train, [p.answer for p in train]) == [1.0] * 6
    assert reward(train, wrong) == [0.0] * 6
    assert reasoning_gym_reward(train, [p.answer for p in train]) == [1.0] * 6  # the old name still works


def test_reasoning_gym_reads_the_boxed_answer_under_qwen_boxed():
    data = DataConfig(task="chain_sum", train_size=3, eval_size=1, template="qwen-boxed")
    train, _ = load_problems(data)
    reward = build_reward(RewardConfig(), data)
    completions = [f"Adding step by step gives \\boxed{{{p.answer}}}." for p in train]
    assert reward(train, completions) == [1.0] * 3


def test_reasoning_gym_any_dataset_by_name():
    data = DataConfig(task="basic_arithmetic", train_size=4, eval_size=1)
    train, _ = load_problems(data)
    assert build_reward(RewardConfig(), data)(train, [p.answer for p in train]) == [1.0] * 4


# ------------------------------------------------------------ code


@pytest.fixture(scope="module")
def humaneval():
    return humaneval_problems()


def test_every_humaneval_canonical_solution_scores_1_and_a_broken_one_0(humaneval):
    assert len(humaneval) == 164
    reward = build_reward(RewardConfig(workers=2), DataConfig(source="humaneval"))  # default: code_tests
    runner = RewardRunner(reward)
    rewards, info = runner(humaneval, [p.answer for p in humaneval])
    failed = [p.id for p, r in zip(humaneval, rewards.tolist(), strict=True) if r != 1.0]
    assert not failed, f"canonical solutions that did not pass: {failed}"
    assert info["reward/code_tests"] == 1.0 and info["reward/errors"] == 0
    broken = ["    return None\n", "    pass\n", "    while True:\n        pass\n", "    return (\n"]
    some = humaneval[:4]
    rewards, info = RewardRunner(build_reward(RewardConfig(workers=2, timeout=2), DataConfig(source="humaneval")))(
        some, broken
    )
    assert rewards.tolist() == [0.0] * 4
    assert info["reward/timeouts"] == 1  # the infinite loop


def test_code_in_a_fenced_block_is_a_whole_function(humaneval):
    p = humaneval[0]  # has_close_elements
    completion = (
        "Here is my solution:\n```python\nfrom typing import List\n\n"
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
        "```\nDone."
    )
    assert extract_code(completion)[1] is True
    reward = build_reward(RewardConfig(workers=1), DataConfig(source="humaneval"))
    assert reward([p, p], [completion, completion.replace("< threshold", "> threshold")]) == [1.0, 0.0]


def test_code_tests_from_a_tests_column_asserts_and_stdio(tmp_path):
    rows = [
        {"prompt": "write add", "tests": "assert add(2, 3) == 5\nassert add(-1, 1) == 0"},
        {"prompt": "write add", "tests": ["assert add(2, 3) == 5", "assert add(0, 0) == 0"]},
        {
            "prompt": "sum the numbers",
            "tests": [{"input": "1 2\n", "output": "3"}, {"input": "5 5\n", "output": "10\n"}],
        },
    ]
    import json

    path = tmp_path / "code.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = DataConfig(path=str(path), eval_path=str(path), columns={"tests": "tests"})
    problems, _ = load_problems(data)
    reward = build_reward(RewardConfig(workers=2), data)
    good = ["```python\ndef add(a, b):\n    return a + b\n```"] * 2 + ["print(sum(map(int, input().split())))"]
    bad = ["def add(a, b):\n    return a - b\n"] * 2 + ["print(3)"]
    assert reward(problems, good) == [1.0, 1.0, 1.0]
    assert reward(problems, bad) == [0.0, 0.0, 0.0]
    assert "assert add(2, 3) == 5" in build_program(problems[1], good[1])


def test_code_tests_without_tests_is_a_config_error():
    with pytest.raises(ConfigError, match="code_tests.*data.columns.tests"):
        build_reward(RewardConfig(functions=[{"name": "code_tests"}]), MATH_DATA)


# ------------------------------------------------------------ custom callables and the weighted sum


def length_reward(prompts, completions, **columns):
    """TRL convention: prompts, completions, then every column by name."""
    assert set(columns) >= {"answer", "difficulty"}
    return [None if c == "skip" else len(c) / 10 for c in completions]


def difficulty_reward(prompts, completions, difficulty, **kwargs):
    return [float(d) for d in difficulty]


calls = []


def flaky_reward(prompts, completions, **kwargs):
    calls.append(len(completions))
    if any(c == "boom" for c in completions):
        raise RuntimeError("boom in the reward")
    return [1.0] * len(completions)


def problems_with_difficulty(n):
    return [
        Problem(prompt=f"p{i}", answer="1", metadata={"question": f"p{i}", "answer": "1", "columns": {"difficulty": i}})
        for i in range(n)
    ]


def test_callables_by_import_path_weighted_and_logged_apart():
    cfg = RewardConfig(
        functions=[
            {"name": "test_rewards:length_reward", "weight": 2.0},
            {"name": "test_rewards:difficulty_reward", "weight": 0.5},
        ]
    )
    reward = build_reward(cfg, MATH_DATA)
    assert isinstance(reward, WeightedReward)
    rewards, info = RewardRunner(reward)(problems_with_difficulty(3), ["a" * 10, "skip", "a" * 5])
    # 2 * len/10 (None adds nothing) + 0.5 * difficulty
    assert rewards.tolist() == pytest.approx([2.0, 0.5, 2.0])
    assert info["reward/length_reward"] == pytest.approx(0.75)  # mean over the samples it scored
    assert info["reward/difficulty_reward"] == pytest.approx(1.0)


def test_a_raising_callable_scores_0_for_that_sample_is_counted_and_shown_once(capsys):
    reward = build_reward(RewardConfig(functions=[{"name": "test_rewards:flaky_reward"}]), MATH_DATA)
    runner = RewardRunner(reward)
    runner(problems_with_difficulty(1), ["ok"])  # a failure in the first call stops the run (test_bad_inputs)
    rewards, info = runner(problems_with_difficulty(3), ["ok", "boom", "ok"])
    assert rewards.tolist() == [1.0, 0.0, 1.0] and info["reward/errors"] == 1
    out = capsys.readouterr().out
    assert "flaky_reward" in out and "Traceback" in out and "boom in the reward" in out
    rewards, info = runner(problems_with_difficulty(2), ["boom", "ok"])  # all "boom" stops the run
    assert rewards.tolist() == [0.0, 1.0] and info["reward/errors"] == 1
    assert capsys.readouterr().out == ""  # shown once
    assert runner.errors == 2


def test_a_builtin_that_raises_on_one_sample_scores_only_that_sample_0(capsys):
    train, _ = load_problems(DataConfig(task="chain_sum", train_size=3, eval_size=1))
    broken = Problem(prompt="q", answer="1", metadata={})  # no reasoning-gym entry: the scorer raises
    runner = RewardRunner(build_reward(RewardConfig(), DataConfig()))
    rewards, info = runner([train[0], broken, train[1]], [train[0].answer, "1", train[1].answer])
    assert rewards.tolist() == [1.0, 0.0, 1.0] and info["reward/errors"] == 1
    assert info["reward/reasoning_gym"] == pytest.approx(2 / 3)
    out = capsys.readouterr().out
    assert "'reasoning_gym' failed" in out and "KeyError" in out


def test_a_plain_reward_fn_still_works_with_the_runner(capsys):
    def fn(problems, completions):
        if len(completions) == 1 and completions[0] == "x":
            raise KeyError("x")
        if "x" in completions:
            raise KeyError("batch")
        return [0.5] * len(completions)

    runner = RewardRunner(fn)
    runner([Problem("p", "1")], ["a"])  # a failure in the first call stops the run (test_bad_inputs)
    rewards, info = runner([Problem("p", "1")] * 3, ["a", "x", "b"])
    assert rewards.tolist() == [0.5, 0.0, 0.5]
    assert info == {"reward/errors": 1.0, "reward/timeouts": 0.0}
    assert "Traceback" in capsys.readouterr().out


@pytest.mark.parametrize(
    "functions, match",
    [
        ([{"name": "math_acuracy"}], "unknown reward 'math_acuracy'; did you mean 'math_accuracy'"),
        (
            [{"name": "code_tests", "memory": 5}],
            "reward 'code_tests': memory: Extra inputs.*options: timeout, memory_mb",
        ),
        ([{"name": "math_format", "style": "latex"}], "style"),
        ([{"name": "mod:fn", "scale": 2}], "takes no options"),
    ],
)
def test_bad_reward_config_names_the_function(functions, match):
    from rlvr.config import format_validation_error

    with pytest.raises(ValidationError) as e:
        RewardConfig(functions=functions)
    msg = format_validation_error(e.value, RewardConfig, "reward.")
    assert msg.startswith("reward.functions.0: "), msg  # the key first
    assert re.search(match, msg), msg


def test_a_callable_that_cannot_be_imported_is_a_config_error():
    with pytest.raises(ConfigError, match=r"reward.functions.0.name: cannot import 'no_such_module:f'"):
        build_reward(RewardConfig(functions=[{"name": "no_such_module:f"}]), MATH_DATA)
    with pytest.raises(ConfigError, match="not a function"):
        build_reward(RewardConfig(functions=[{"name": "test_rewards:calls"}]), MATH_DATA)


def test_reward_config_keeps_its_old_fields():
    cfg = RewardConfig()
    assert cfg.functions == []
    assert "overlong_buffer" not in RewardConfig.model_fields  # moved: algorithm.overlong_buffer (issue 9)
    with pytest.raises(ValidationError):
        RewardConfig(overlong_buffer=-1)
    with pytest.raises(ValidationError, match="Extra inputs"):
        RewardConfig(overlong_bufer=2)


def test_overlong_penalty_unchanged():
    pen = overlong_penalty(torch.tensor([4, 6, 8, 10]), max_len=10, buffer=4, factor=1.0)
    assert pen.tolist() == [0.0, 0.0, -0.5, -1.0]
