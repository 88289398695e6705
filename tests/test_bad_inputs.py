"""The bad-input corpus (issue 10): every bad config, recipe, override, data file, reward function,
sweep file and samples file is answered by one clear line on stderr that names the key, file, row
or function, with exit != 0, no traceback, and nothing half-written.

Most cases fail at load, before any model loads, through `rlvr.cli.main` in-process; the reward
functions fail in the first step of a tiny random model; a few go through a real subprocess to
prove the exit code and the missing traceback end to end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import helpers

ROOT = Path(__file__).resolve().parents[1]

# reward functions by import path (TRL's convention), each broken in its own way; written to a
# module of their own so that the reward worker process imports them fast
REWARDS = """
import math, time

def good(prompts, completions, **columns):
    return [float(len(c) % 2) for c in completions]

def raises(prompts, completions, **columns):
    raise KeyError("solution")

def wrong_length(prompts, completions, **columns):
    return [1.0] * (len(completions) + 1)

def a_string(prompts, completions, **columns):
    return "1.0"

def strings(prompts, completions, **columns):
    return ["1.0" for _ in completions]

def nan(prompts, completions, **columns):
    return [math.nan for _ in completions]

def inf(prompts, completions, **columns):
    return [math.inf for _ in completions]

def nan_first(prompts, completions, **columns):
    return [math.nan] + [1.0] * (len(completions) - 1)

def a_dict(prompts, completions, **columns):
    return {"score": 1.0}

def no_kwargs(completions):
    return [1.0 for _ in completions]

def needs_solution(prompts, completions, solution, **columns):
    return [1.0 for _ in completions]

def hangs(prompts, completions, **columns):
    time.sleep(600)
    return [1.0 for _ in completions]

def returns_none(prompts, completions, **columns):
    return None
"""


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace: a good tiny config, data files good and bad, a reward module on sys.path."""
    d = tmp_path_factory.mktemp("bad")
    helpers.write_config(d / "good.yaml")
    rows = [{"prompt": f"what is {i} + {i}?", "answer": str(2 * i)} for i in range(12)]
    (d / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "afile").write_text("not a directory\n")
    (d / "m10c_bad_rewards.py").write_text(REWARDS)
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))


def write(d: Path, name: str, content: str | bytes) -> str:
    p = d / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(p)


def jsonl(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    from rlvr.cli import main

    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


PROGRESS = re.compile(r"it/s\]$|s/it\]$|^rlvr: WARNING")  # progress bars and warnings are not errors


def assert_one_clear_line(rc: int, out: str, err: str, names: list[str]) -> None:
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip() and not PROGRESS.search(line)]
    assert rc != 0, f"exit 0 for a bad input; stderr: {err}"
    assert "Traceback" not in err + out, err + out
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{err}"
    assert lines[0].startswith("rlvr: "), lines[0]
    for name in names:
        assert name in lines[0], f"{name!r} not named in: {lines[0]}"


# ------------------------------------------------------------ at load: (files, args, names)
# `{d}` is the workspace; `G` the good config. Each case is the CLI's arguments after `train`.
G = "{d}/good.yaml"
LOAD_CASES: dict[str, tuple[dict[str, str | bytes], list[str], list[str]]] = {
    # recipe files
    "empty recipe": ({"e.yaml": ""}, ["{d}/e.yaml"], ["e.yaml", "empty"]),
    "recipe of comments only": ({"c.yaml": "# nothing\n"}, ["{d}/c.yaml"], ["c.yaml", "empty"]),
    "recipe is a list": ({"l.yaml": "- a\n- b\n"}, ["{d}/l.yaml"], ["l.yaml", "mapping"]),
    "recipe is a scalar": ({"s.yaml": "grpo\n"}, ["{d}/s.yaml"], ["s.yaml", "mapping"]),
    "invalid YAML": ({"y.yaml": "train: {lr: [1e-4\n"}, ["{d}/y.yaml"], ["y.yaml", "not valid YAML"]),
    "tab-indented YAML": ({"t.yaml": "train:\n\tlr: 1\n"}, ["{d}/t.yaml"], ["t.yaml", "not valid YAML"]),
    "recipe not UTF-8": ({"u.yaml": b"train: {lr: 1}\n# \xff\xfe\n"}, ["{d}/u.yaml"], ["u.yaml", "UTF-8"]),
    "no such recipe": ({}, ["{d}/nope.yaml"], ["nope.yaml", "not found"]),
    "recipe is a directory": ({}, ["{d}"], ["not found"]),
    "missing base": ({"b.yaml": "base: gone.yaml\n"}, ["{d}/b.yaml"], ["b.yaml", "gone.yaml"]),
    "base not a name": ({"b2.yaml": "base: [1]\n"}, ["{d}/b2.yaml"], ["b2.yaml", "base"]),
    "base cycle": (
        {"x.yaml": "base: z.yaml\n", "z.yaml": "base: x.yaml\n"},
        ["{d}/x.yaml"],
        ["cycle", "x.yaml", "z.yaml"],
    ),
    # keys and values
    "unknown section": ({}, [G, "trian.lr=1"], ["trian", "train"]),
    "unknown key": ({}, [G, "train.lrr=1"], ["train.lrr", "train.lr"]),
    "negative lr": ({}, [G, "train.lr=-1"], ["train.lr"]),
    "lr not a number": ({}, [G, "train.lr=fast"], ["train.lr", "fast"]),
    "steps zero": ({}, [G, "train.steps=0"], ["train.steps"]),
    "betas of three": ({}, [G, "train.betas=[0.9,0.9,0.9]"], ["train.betas"]),
    "override without =": ({}, [G, "train.lr"], ["train.lr", "dotted.key=value"]),
    "override into a value": ({}, [G, "train.lr=1", "train.lr.x=2"], ["train.lr"]),
    "top_p above 1": ({}, [G, "rollout.top_p=1.5"], ["rollout.top_p"]),
    "model dtype": ({}, [G, "model.dtype=int8"], ["model.dtype"]),
    "model path missing": ({}, [G, "model.path=./no/such/model"], ["model.path", "./no/such/model"]),
    "vllm engine, vllm not installed": ({}, [G, "rollout.engine=vllm"], ["rollout.engine", "vllm is not installed"]),
    "unknown engine": ({}, [G, "rollout.engine=sglang"], ["rollout.engine"]),
    "output_dir is a file": ({}, [G, "output_dir={d}/afile"], ["output_dir", "afile", "file"]),
    "output_dir inside a file": ({}, [G, "output_dir={d}/afile/run"], ["output_dir", "afile"]),
    "grpo with n=1": ({}, [G, "rollout.n=1"], ["rollout.n", "grpo"]),
    "rloo with n=1": ({}, [G, "algorithm.name=rloo", "rollout.n=1"], ["rollout.n", "rloo"]),
    "dapo with n=1": ({}, [G, "algorithm={name: dapo}", "rollout.n=1"], ["rollout.n", "dapo"]),
    "eval ks above n": ({}, [G, "eval.n=2", "eval.ks=[4]"], ["eval", "ks"]),
    "tracker unknown": ({}, [G, "tracking.report_to=[mlflow]"], ["tracking.report_to"]),
    # algorithm section
    "unknown algorithm": ({}, [G, "algorithm.name=grpoo"], ["grpoo"]),
    "algorithm without name": ({"an.yaml": "algorithm: {scale: none}\n"}, ["{d}/an.yaml"], ["algorithm.name"]),
    "algorithm option typo": ({}, [G, "algorithm.clip_epsilon=0.2"], ["algorithm.clip_epsilon"]),
    "algorithm not a mapping": ({}, [G, "algorithm=grpo"], ["algorithm"]),
    "algorithm import path of a non-class": ({}, [G, "algorithm.name=json:dumps"], ["json:dumps"]),
    # rewards named in the config
    "unknown reward": ({}, [G, "reward.functions=[{name: math_acuracy}]"], ["reward.functions.0", "math_accuracy"]),
    "reward module missing": ({}, [G, "reward.functions=[{name: 'no_mod:f'}]"], ["reward.functions.0", "no_mod:f"]),
    "reward not callable": (
        {},
        [G, "reward.functions=[{name: 'helpers:TASK'}]"],
        ["reward.functions.0", "helpers:TASK"],
    ),
    "reward path with options": (
        {},
        [G, "reward.functions=[{name: 'helpers:graded', scale: 2}]"],
        ["reward.functions.0", "no options"],
    ),
    "builtin reward bad option": (
        {},
        [G, "reward.functions=[{name: code_tests, memory: 5}]"],
        ["reward.functions.0", "code_tests", "memory"],
    ),
    "code_tests without tests": ({}, [G, "reward.functions=[{name: code_tests}]"], ["reward.functions.0", "tests"]),
    "reward timeout zero": ({}, [G, "reward.timeout=0"], ["reward.timeout"]),
    "moved reward key": ({}, [G, "reward.overlong_buffer=4"], ["reward.overlong_buffer", "algorithm.overlong_buffer"]),
    # data
    "unknown task": ({}, [G, "data.task=chain_summ"], ["data.task", "chain_summ"]),
    "bad task_config": ({}, [G, "data.task_config={min_terms: x}"], ["data.task_config"]),
    "unknown template": ({}, [G, "data.template=r2"], ["data.template", "r2"]),
    "no data file": ({}, [G, "data.path={d}/none.jsonl"], ["data.path", "none.jsonl"]),
    "data path a directory": ({}, [G, "data.path={d}/dir.jsonl"], ["data.path", "directory"]),
    "data suffix unknown": ({}, [G, "data.path={d}/good.txt"], ["data", "good.txt", "data.source"]),
    "jsonl without path": ({}, [G, "data.source=jsonl"], ["data", "data.path"]),
    "bad JSON row": (
        {"j.jsonl": jsonl({"prompt": "a", "answer": "1"}, b"{prompt: 2")},
        [G, "data.path={d}/j.jsonl"],
        ["data.path", "j.jsonl", "row 2", "JSON"],
    ),
    "non-UTF-8 row": (
        {"u.jsonl": jsonl({"prompt": "a", "answer": "1"}, b'{"prompt": "\xff\xfe", "answer": "2"}')},
        [G, "data.path={d}/u.jsonl"],
        ["data.path", "u.jsonl", "row 2", "UTF-8"],
    ),
    "row not an object": (
        {"a.jsonl": jsonl({"prompt": "a", "answer": "1"}, [1, 2])},
        [G, "data.path={d}/a.jsonl"],
        ["a.jsonl", "row 2", "object"],
    ),
    "no prompt column": (
        {"p.jsonl": jsonl({"question": "a", "answer": "1"})},
        [G, "data.path={d}/p.jsonl"],
        ["p.jsonl", "row 1", "'prompt'", "data.columns.prompt"],
    ),
    "prompt not a string": (
        {"n.jsonl": jsonl({"prompt": 7, "answer": "1"})},
        [G, "data.path={d}/n.jsonl"],
        ["n.jsonl", "row 1", "'prompt'"],
    ),
    "empty prompt": (
        {"ep.jsonl": jsonl({"prompt": "  ", "answer": "1"})},
        [G, "data.path={d}/ep.jsonl"],
        ["ep.jsonl", "row 1", "empty"],
    ),
    "no answer column": (
        {"na.jsonl": jsonl({"prompt": "a"})},
        [G, "data.path={d}/na.jsonl"],
        ["na.jsonl", "row 1", "'answer'"],
    ),
    "empty data file": ({"empty.jsonl": b"\n\n"}, [G, "data.path={d}/empty.jsonl"], ["empty.jsonl", "no rows"]),
    "missing extra column": (
        {},
        [G, "data.path={d}/good.jsonl", "data.extra_columns=[level]"],
        ["good.jsonl", "'level'", "data.extra_columns"],
    ),
    "train_size too big": (
        {},
        [G, "data.path={d}/good.jsonl", "data.eval_path={d}/good.jsonl", "data.train_size=99"],
        ["data.train_size", "good.jsonl"],
    ),
    "not parquet": ({"f.parquet": b"PAR1 nope"}, [G, "data.path={d}/f.parquet"], ["data.path", "f.parquet", "Parquet"]),
    "bad tests column": (
        {"t.jsonl": jsonl({"prompt": "a", "tests": 5})},
        [G, "data.path={d}/t.jsonl", "data.columns.tests=tests"],
        ["t.jsonl", "row 1", "'tests'"],
    ),
}


@pytest.mark.parametrize("case", list(LOAD_CASES))
def test_a_bad_input_at_load_is_one_clear_line(case, ws, capsys):
    files, args, names = LOAD_CASES[case]
    for name, content in files.items():
        write(ws, name, content)
    (ws / "dir.jsonl").mkdir(exist_ok=True)
    out_dir = ws / "run"
    shutil.rmtree(out_dir, ignore_errors=True)  # a case that wrongly ran must not fail the next ones
    rc, out, err = run_main(["train", *[a.replace("{d}", str(ws)) for a in args]], capsys)
    assert_one_clear_line(rc, out, err, names)
    assert not out_dir.exists(), "a run directory was written for a config that never started"


# ------------------------------------------------------------ other commands


def sweep_yaml(**over) -> str:
    base = {"base": "good.yaml", "output_dir": "sw", "axes": {"algorithm": ["grpo"]}}
    return yaml.safe_dump({**base, **over})


SWEEP_CASES: dict[str, tuple[str | bytes | None, list[str]]] = {
    "no sweep file": (None, ["nosweep.yaml", "not found"]),
    "sweep not YAML": ("axes: [1\n", ["s.yaml", "not valid YAML"]),
    "empty sweep": ("", ["s.yaml", "mapping"]),
    "sweep unknown key": (sweep_yaml(axis={"seed": [0]}), ["s.yaml", "axis"]),
    "sweep base missing": (sweep_yaml(base="gone.yaml"), ["s.yaml", "gone.yaml"]),
    "sweep empty axis": (sweep_yaml(axes={"seed": []}), ["s.yaml", "axes.seed"]),
    "sweep cell bad": (sweep_yaml(axes={"train.lr": [-1]}), ["s.yaml", "train.lr"]),
}


@pytest.mark.parametrize("case", list(SWEEP_CASES))
def test_a_bad_sweep_file_is_one_clear_line(case, ws, capsys):
    content, names = SWEEP_CASES[case]
    path = ws / ("nosweep.yaml" if content is None else "s.yaml")
    if content is not None:
        write(ws, "s.yaml", content)
    rc, out, err = run_main(["sweep", path, "--launcher", "print"], capsys)
    assert_one_clear_line(rc, out, err, names)
    assert not (ws / "sw").exists()


SAMPLES_CASES: dict[str, tuple[bytes | None, list[str]]] = {
    "no samples file": (None, ["samples.jsonl", "not found"]),
    "samples line not JSON": (b"\n{oops\n", ["samples.jsonl", "line 2", "JSON"]),
    "samples not UTF-8": (b'{"text": "\xff"}\n', ["samples.jsonl", "line 1", "UTF-8"]),
    "samples row a list": (jsonl([1]), ["samples.jsonl", "line 1", "object"]),
    "samples without text": (jsonl({"problem_id": "x"}), ["samples.jsonl", "line 1", "'text'"]),
    "samples unknown problem": (jsonl({"problem_id": "nope", "text": "1"}), ["samples.jsonl", "line 1", "'nope'"]),
}


@pytest.mark.parametrize("case", list(SAMPLES_CASES))
def test_bad_eval_samples_are_one_clear_line(case, ws, capsys):
    content, names = SAMPLES_CASES[case]
    samples = ws / "samples.jsonl"
    samples.unlink(missing_ok=True)
    if content is not None:
        samples.write_bytes(content)
    args = ["eval", "--samples", samples, "--base", "none", "--config", ws / "good.yaml", "--out", ws / "ev"]
    rc, out, err = run_main(args, capsys)
    assert_one_clear_line(rc, out, err, names)
    assert not (ws / "ev" / "metrics.json").exists()


# ------------------------------------------------------------ reward functions, in the first step


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return helpers.make_random_model(tmp_path_factory.mktemp("model") / "m", hidden=16, layers=1)


REWARD_CASES: dict[str, tuple[str, list[str]]] = {
    "raises": ("raises", ["'raises'", "m10c_bad_rewards:raises", "KeyError", "every sample"]),
    "wrong length": ("wrong_length", ["'wrong_length'", "returned 2 scores for 1 completions"]),
    "returns a string": ("a_string", ["'a_string'", "returned str", "not a list of scores"]),
    "returns a dict": ("a_dict", ["'a_dict'", "returned dict"]),
    "returns None": ("returns_none", ["'returns_none'", "returned NoneType"]),
    "returns strings": ("strings", ["'strings'", "returned str ('1.0')", "finite number"]),
    "returns nan": ("nan", ["'nan'", "returned float (nan)"]),
    "returns inf": ("inf", ["'inf'", "returned float (inf)"]),
    "nan on one sample of the first call": ("nan_first", ["'nan_first'", "first call", "nan"]),
    "takes no keywords": ("no_kwargs", ["'no_kwargs'", "TypeError", "prompts", "f(prompts, completions, **columns)"]),
    "needs a missing column": ("needs_solution", ["'needs_solution'", "solution", "columns here: answer"]),
}


def reward_config(ws: Path, model: Path, fn: str, **over) -> Path:
    cfg = helpers.write_config(
        ws / f"r_{fn}.yaml",
        model,
        output_dir=str(ws / f"run_{fn}"),
        data={"source": "jsonl", "path": str(ws / "good.jsonl"), "eval_path": str(ws / "good.jsonl")},
        rollout={"n": 2, "max_new_tokens": 4},
        train={"steps": 1, "prompts_per_step": 2, "micro_batch_size": 4},
        reward={"functions": [{"name": f"m10c_bad_rewards:{fn}"}], **over},
    )
    data = yaml.safe_load(cfg.read_text())
    data["data"] = {k: v for k, v in data["data"].items() if k not in ("task", "task_config")}
    data["data"].update(train_size=2, eval_size=2)
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def assert_nothing_trained(run: Path) -> None:
    assert not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text().strip()
    assert not (run / "final").exists() and not list(run.glob("checkpoint*"))


@pytest.mark.parametrize("case", list(REWARD_CASES))
def test_a_broken_reward_function_stops_the_run_with_one_line(case, ws, random_model, capsys):
    fn, names = REWARD_CASES[case]
    cfg = reward_config(ws, random_model, fn)
    rc, out, err = run_main(["train", cfg], capsys)
    assert_one_clear_line(rc, out, err, names)
    assert_nothing_trained(ws / f"run_{fn}")


def test_a_hung_reward_is_bounded_by_reward_timeout(ws, random_model, capsys):
    """An import-path reward runs in a worker process: past reward.timeout it is killed, and a reward
    that timed out on every sample of a batch stops the run naming it."""
    cfg = reward_config(ws, random_model, "hangs", timeout=1)
    rc, out, err = run_main(["train", cfg], capsys)
    assert_one_clear_line(rc, out, err, ["'hangs'", "timed out after 1s", "reward.timeout"])
    assert_nothing_trained(ws / "run_hangs")


def test_a_reward_whose_every_sample_fails_stops_after_the_first_call_too():
    """Past the first call, a batch where every sample is a string, nan or inf stops the run; a batch
    of None (TRL's "no opinion") does not."""
    from rlvr.errors import RewardError
    from rlvr.rewards import RewardRunner, WeightedReward
    from rlvr.rewards.adapter import CallableReward
    from rlvr.tasks import Problem

    def mixed(prompts, completions, **columns):
        value = {"ok": 1.0, "str": "1", "nan": float("nan"), "inf": float("inf"), "none": None}[completions[0]]
        return [value] * len(completions)

    runner = RewardRunner(WeightedReward([("mixed", 1.0, CallableReward(mixed))]))
    problems = [Problem("p", "1")] * 2
    runner(problems, ["ok", "ok"])
    for c in ("str", "nan", "inf"):
        with pytest.raises(RewardError, match="'mixed' failed on every sample of a batch \\(2\\): returned"):
            runner(problems, [c, c])
    rewards, info = runner(problems, ["none", "none"])
    assert rewards.tolist() == [0.0, 0.0] and info["reward/errors"] == 0


def test_a_non_finite_score_on_one_sample_is_an_error_counted_per_sample(capsys):
    from rlvr.rewards import RewardRunner
    from rlvr.tasks import Problem

    def fn(problems, completions):
        return [float("nan") if c == "bad" else 0.5 for c in completions]

    runner = RewardRunner(fn)
    runner([Problem("p", "1")], ["good"])
    rewards, info = runner([Problem("p", "1")] * 3, ["good", "bad", "good"])
    assert rewards.tolist() == [0.5, 0.0, 0.5]  # not nan: the sample scores 0
    assert info["reward/errors"] == 1
    assert "returned float (nan) for sample" in capsys.readouterr().out  # shown once


def test_a_long_prompt_is_refused_naming_its_row(ws, random_model, capsys):
    """A prompt whose tokens plus max_new_tokens exceed the model's positions (256 here) names its row."""
    long = jsonl({"prompt": "1+" * 200 + "1=?", "answer": "201"}, {"prompt": "1 + 1 = ?", "answer": "2"})
    path = write(ws, "long.jsonl", long)
    cfg = reward_config(ws, random_model, "good")
    rc, out, err = run_main(["train", cfg, f"data.path={path}", f"data.eval_path={path}", "train.steps=1"], capsys)
    assert_one_clear_line(rc, out, err, ["long.jsonl row 1", "403 tokens", "rollout.max_new_tokens=4", "256"])
    assert not (ws / "run_good").exists()  # refused at load: no config.yaml, no lock, nothing written


# ------------------------------------------------------------ end to end, in a subprocess


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{cwd}{os.pathsep}{ROOT / 'tests'}"}
    return subprocess.run(
        [sys.executable, "-m", "rlvr", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "args, names",
    [
        (["train", "{d}/e.yaml"], ["e.yaml", "empty"]),
        (["train", "{d}/good.yaml", "rollout.n=1"], ["rollout.n"]),
        (["train", "{d}/good.yaml", "data.path={d}/u.jsonl"], ["u.jsonl", "row 2"]),
    ],
)
def test_in_a_subprocess_the_exit_code_is_not_0_and_there_is_no_traceback(args, names, ws):
    write(ws, "e.yaml", "")
    write(ws, "u.jsonl", jsonl({"prompt": "a", "answer": "1"}, b'{"prompt": "\xff"}'))
    r = run_cli([a.replace("{d}", str(ws)) for a in args], ws)
    assert r.returncode == 2, r.stderr
    assert_one_clear_line(r.returncode, r.stdout, r.stderr, names)


def test_a_config_error_on_a_later_rank_waits_for_rank_0_then_names_its_rank(ws, capsys, monkeypatch):
    """Rank 0 prints a config error at once; another rank waits (the launcher ends it when rank 0
    exits), and prints only if it outlives the wait: its own error, naming the rank."""
    import rlvr.cli

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(rlvr.cli, "RANK_WAIT", 0.0)
    rc, out, err = run_main(["train", ws / "good.yaml", "rollout.n=1"], capsys)
    assert rc == 2 and err.startswith("rlvr (rank 1): config error: ") and "rollout.n" in err


def test_under_two_processes_a_config_error_is_printed_once(ws):
    """`accelerate launch` with 2 CPU processes: one line from rlvr, not one per rank. (What follows
    it is the launcher's own ChildFailedError report, outside rlvr.)"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd = [*launch, "-m", "rlvr", "train", str(ws / "good.yaml"), "rollout.n=1"]
    r = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    ours = [line for line in r.stderr.splitlines() if line.startswith(("rlvr: ", "rlvr ("))]
    assert len(ours) == 1 and "rollout.n" in ours[0], r.stderr
    assert not (ws / "run").exists()


@pytest.mark.distributed
def test_rlvr_launch_ends_a_failed_run_with_the_workers_line_and_exit_code(ws):
    """`rlvr launch` (accelerate launch through rlvr) under 2 processes: the config error's one line is the
    whole of stderr (no launcher traceback or log lines after it) and the exit code is the worker's 2,
    where `accelerate launch` exits 1 after a ChildFailedError report."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}
    launch = [sys.executable, "-m", "rlvr", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533"]
    r = subprocess.run(
        [*launch, "train", str(ws / "good.yaml"), "rollout.n=1"], cwd=ws, env=env, capture_output=True, text=True
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlvr: config error: ") and "rollout.n" in lines[0], r.stderr
    assert not (ws / "run").exists()


def test_rlvr_launch_splits_accelerates_options_from_the_command():
    from accelerate.commands.launch import launch_command_parser

    from rlvr.launch import split

    p = launch_command_parser()
    assert split(["--num_processes", "2", "train", "a.yaml", "x=1"], p) == (
        ["--num_processes", "2"],
        ["train", "a.yaml", "x=1"],
    )
    # an option's value that happens to be a command name is not the command
    assert split(["--config_file", "train", "--multi_gpu", "eval", "--model", "m"], p) == (
        ["--config_file", "train", "--multi_gpu"],
        ["eval", "--model", "m"],
    )
    assert split(["--num_processes", "2"], p) == (["--num_processes", "2"], [])


def test_rlvr_launch_without_a_command_says_what_to_write(capsys):
    from rlvr.cli import main

    assert main(["launch", "--num_processes", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlvr launch: name the rlvr command")


def test_the_corpus_is_wide():
    n = len(LOAD_CASES) + len(SWEEP_CASES) + len(SAMPLES_CASES) + len(REWARD_CASES) + 3 + 3
    assert n >= 50, n
