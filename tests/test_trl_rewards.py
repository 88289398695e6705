"""TRL reward functions as rlvr rewards (issue 13): TRL 1.16's keyword set and conversational format,
TRL's own shipped rewards, and `reward.stop_error_frac`.

The reference for the keywords is TRL itself: `GRPOTrainer._calculate_rewards` of the installed TRL,
called on the same rows with a recording reward function.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlvr.batch import RolloutBatch
from rlvr.data import DataConfig, load_problems
from rlvr.errors import RewardError
from rlvr.rewards import RewardConfig, RewardRunner, WeightedReward, build_reward
from rlvr.rewards.adapter import CallableReward, TrainerState
from rlvr.rewards.runner import completion_id_lists

ROWS = [
    {"prompt": "What is 1 + 1?", "solution": "2"},
    {"prompt": "What is 2 + 5?", "solution": "7"},
    {"prompt": "What is 3 + 3?", "solution": "6"},
    {"prompt": "What is 4 + 1?", "solution": "5"},
]
COMPLETIONS = ["<think>easy</think> \\boxed{2}", "\\boxed{8}", "no idea no idea", "<think>sum</think>\\boxed{5}"]
IDS = [[7, 8, 2], [9, 9, 9, 9, 2], [5, 6, 5, 6], [1, 2]]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A Llama-style model directory with a chat template (tests/test_bos.py's)."""
    from test_bos import make_llama

    return make_llama(tmp_path_factory.mktemp("llama") / "m")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def data_cfg(path: Path, template: str) -> DataConfig:
    return DataConfig(
        source="jsonl", path=str(path), eval_path=str(path), columns={"answer": "solution"}, template=template
    )


def problems_of(path: Path, template: str, llama: Path):
    from transformers import AutoTokenizer

    cfg = data_cfg(path, template)
    problems, _ = load_problems(cfg, AutoTokenizer.from_pretrained(llama) if template == "chat" else None)
    assert [p.metadata["question"] for p in problems] == [r["prompt"] for r in ROWS]
    return cfg, problems


def trl_keywords(inputs: list[dict], prompts: list, completions: list, completion_ids: list, state) -> dict:
    """What the installed TRL's GRPOTrainer passes a reward function for these rows (its own
    `_calculate_rewards`, run on a stand-in trainer)."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    got: dict = {}

    def record(**kw):
        got.update(kw)
        return [0.0] * len(kw["completions"])

    trainer = SimpleNamespace(
        accelerator=SimpleNamespace(device=torch.device("cpu"), is_main_process=True),
        args=SimpleNamespace(report_to=[]),
        state=state,
        reward_funcs=[record],
        reward_processing_classes=[None],
        reward_func_names=["record"],
        environments=None,
        _log_completion_extra=lambda column, values: None,
        _log_metric=lambda name, value: None,
    )
    GRPOTrainer._calculate_rewards(trainer, inputs, prompts, completions, completion_ids)
    return got


@pytest.mark.parametrize("template", ["chat", "plain"])
def test_a_function_gets_the_keywords_trl_passes(template, llama, data_file, tmp_path, monkeypatch):
    """rlvr (a function by import path, in its worker) and TRL's own `_calculate_rewards` pass the
    same keywords with the same values; under the chat template both are TRL's conversational format."""
    from transformers import TrainerState as HFTrainerState

    cfg, problems = problems_of(data_file, template, llama)
    record = tmp_path / "record.json"
    monkeypatch.setenv("RLVR_TEST_RECORD", str(record))
    reward = build_reward(RewardConfig(functions=[{"name": "trl_reward_fns:records"}]), cfg)
    state = TrainerState(global_step=3, max_steps=10, epoch=0.5)
    try:
        RewardRunner(reward)(problems, COMPLETIONS, completion_ids=IDS, trainer_state=state)
    finally:
        reward.close()
    ours = json.loads(record.read_text())

    if template == "chat":
        prompts = [[{"role": "user", "content": r["prompt"]}] for r in ROWS]
        completions = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    else:
        prompts, completions = [p.prompt for p in problems], COMPLETIONS
    inputs = [{"prompt": p, "solution": r["solution"]} for p, r in zip(prompts, ROWS, strict=True)]
    theirs = trl_keywords(inputs, prompts, completions, IDS, HFTrainerState(global_step=3, max_steps=10, epoch=0.5))

    assert set(theirs) <= set(ours), set(theirs) - set(ours)
    assert set(ours) - set(theirs) == {"answer"}  # rlvr's own name for the gold, besides the file's `solution`
    for key in ("prompts", "completions", "completion_ids", "solution"):
        assert ours[key] == theirs[key], key
    for field in ("global_step", "max_steps", "epoch"):
        assert ours["trainer_state"][field] == getattr(theirs["trainer_state"], field)
    assert ours["log_extra"] == ours["log_metric"] == "callable"


def test_trls_own_reward_functions_score_as_trl_does(llama, data_file):
    """trl.rewards' accuracy_reward and think_format_reward (conversational, by import path) and a
    repetition penalty on completion_ids score what the same functions give called directly."""
    from trl.rewards import accuracy_reward, get_repetition_penalty_reward, think_format_reward

    cfg, problems = problems_of(data_file, "chat", llama)
    names = ["trl.rewards:accuracy_reward", "trl.rewards:think_format_reward", "trl_reward_fns:repetition"]
    reward = build_reward(RewardConfig(functions=[{"name": n} for n in names]), cfg)
    try:
        _, parts = reward.detailed(problems, COMPLETIONS, completion_ids=IDS, trainer_state=TrainerState())
    finally:
        reward.close()
    conv = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    want = {
        "accuracy_reward": accuracy_reward(conv, [r["solution"] for r in ROWS]),
        "think_format_reward": think_format_reward(conv),
        "repetition": get_repetition_penalty_reward(ngram_size=2, max_penalty=-1.0)(IDS),
    }
    assert want["accuracy_reward"] == [1.0, 0.0, 0.0, 1.0]  # the functions really tell these apart
    assert want["think_format_reward"] == [1.0, 0.0, 0.0, 1.0]
    assert want["repetition"][1] < 0 and want["repetition"][0] == 0
    for name, scores in want.items():
        assert parts[name].scores == scores, name
        assert parts[name].errors == parts[name].timeouts == 0, parts[name].tracebacks


def test_completion_ids_are_the_response_tokens_with_eos_without_padding():
    pad, eos = 0, 2
    resp = torch.tensor([[5, 6, eos, pad], [7, 7, 7, 7], [eos, pad, pad, pad]])
    batch = RolloutBatch(
        input_ids=torch.cat([torch.tensor([[pad, 1]] * 3), resp], 1),
        attention_mask=torch.ones(3, 6, dtype=torch.long),
        response_mask=(torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])).float(),
        prompt_len=2,
        group=torch.arange(3),
        problems=[],
        completions=["", "", ""],
        truncated=torch.tensor([False, True, False]),
    )
    assert completion_id_lists(batch) == [[5, 6, eos], [7, 7, 7, 7], [eos]]
    batch.prompt_len = 0  # an OpenAI server's batch holds no token ids
    assert completion_id_lists(batch) is None


def fails_on_x(prompts, completions, **kwargs):
    if "x" in completions:
        raise ValueError("x is not a completion")
    return [1.0] * len(completions)


@pytest.mark.parametrize(
    "frac, survives, stops",
    [(1.0, ["x", "x", "x", "ok"], ["x"] * 4), (0.5, ["x", "ok", "ok", "ok"], ["x", "x", "ok", "ok"])],
)
def test_stop_error_frac(frac, survives, stops):
    """A batch in which at least reward.stop_error_frac of the samples fail stops the run; fewer score 0."""
    from rlvr.tasks import Problem

    problems = [Problem("p", "1")] * 4
    runner = RewardRunner(WeightedReward([("fails_on_x", 1.0, CallableReward(fails_on_x))], stop_error_frac=frac))
    runner(problems, ["ok"] * 4)  # past the first call, where any failure stops the run
    rewards, info = runner(problems, survives)
    assert info["reward/errors"] == survives.count("x")
    assert rewards.tolist() == [0.0 if c == "x" else 1.0 for c in survives]
    what = (
        "every sample of a batch \\(4\\)" if frac == 1 else "2 of 4 samples of a batch \\(reward.stop_error_frac=0.5\\)"
    )
    with pytest.raises(RewardError, match=f"'fails_on_x' failed on {what}: .*x is not a completion"):
        runner(problems, stops)


def test_stop_error_frac_is_a_config_key():
    from pydantic import ValidationError

    reward = build_reward(RewardConfig(stop_error_frac=0.25, functions=[{"name": "math_accuracy"}]), DataConfig())
    assert RewardRunner(reward).stop_error_frac == 0.25
    assert RewardRunner(build_reward(RewardConfig(), DataConfig())).stop_error_frac == 1.0
    for bad in (0, 1.5):
        with pytest.raises(ValidationError):
            RewardConfig(stop_error_frac=bad)


def test_trl_functions_train_end_to_end_on_a_chat_model(llama, data_file, tmp_path, capsys):
    """A 2-step run on a Llama-style model with its chat template and four TRL functions: one on
    completion_ids, one conversational, one reading trainer_state and logging, and TRL's
    accuracy_reward. No reward error; the logged metrics arrive per step."""
    import yaml

    import helpers
    from rlvr.cli import main

    cfg = helpers.write_config(
        tmp_path / "run.yaml",
        llama,
        data={"source": "jsonl", "path": str(data_file), "eval_path": str(data_file), "template": "chat"},
        rollout={"n": 2, "max_new_tokens": 6},
        train={"steps": 2, "prompts_per_step": 2, "micro_batch_size": 4},
        reward={
            "functions": [
                {"name": "trl_reward_fns:len_penalty"},
                {"name": "trl_reward_fns:has_digit"},
                {"name": "trl_reward_fns:logs_state"},
                {"name": "trl.rewards:accuracy_reward"},
            ]
        },
    )
    raw = yaml.safe_load(cfg.read_text())
    raw["data"] = {k: v for k, v in raw["data"].items() if k not in ("task", "task_config", "train_size", "eval_size")}
    raw["data"]["columns"] = {"answer": "solution"}
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "logged columns with log_extra (prompt_kind)" in out
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for step, row in enumerate(rows):
        assert row["reward/errors"] == 0 and row["reward/timeouts"] == 0
        assert row["reward/logs_state/global_step"] == step and row["reward/logs_state/max_steps"] == 2
        assert row["reward/len_penalty"] == pytest.approx(-row["response_len/mean"] / 100)
        assert 0 <= row["reward/has_digit"] <= 1 and 0 <= row["reward/accuracy_reward"] <= 1


def test_a_column_named_like_a_trl_keyword_is_a_config_error(data_file):
    from rlvr.errors import ConfigError

    cfg = data_cfg(data_file, "plain").model_copy(update={"extra_columns": ["completion_ids"]})
    with pytest.raises(ConfigError, match="data.extra_columns: completion_ids would clash"):
        build_reward(RewardConfig(functions=[{"name": "trl_reward_fns:len_penalty"}]), cfg)
