"""Reward functions written the way TRL's docs write them, for tests/test_trl_rewards.py by import
path (a module of its own, so that the reward worker process imports it fast)."""

import dataclasses
import json
import os

from trl.rewards import get_repetition_penalty_reward


def records(**kwargs):
    """Writes what it was passed to $RLVR_TEST_RECORD: callables as "callable", trainer_state's fields."""
    out = {}
    for k, v in kwargs.items():
        if callable(v):
            v = "callable"
        elif k == "trainer_state":
            v = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
        out[k] = v
    with open(os.environ["RLVR_TEST_RECORD"], "w") as f:
        json.dump(out, f)
    return [0.0] * len(kwargs["completions"])


def len_penalty(completions, completion_ids, **kwargs):
    """Shorter is better, counted in tokens (TRL: `completion_ids` is each completion's token ids)."""
    return [-len(ids) / 100 for ids in completion_ids]


def has_digit(completions, **kwargs):
    """Conversational: each completion is [{"role": "assistant", "content": text}]."""
    return [float(any(ch.isdigit() for ch in c[0]["content"])) for c in completions]


def logs_state(prompts, completions, trainer_state, log_metric, log_extra, **kwargs):
    """Reads trainer_state and logs through log_metric and log_extra, as TRL 1.16 allows."""
    log_metric("global_step", trainer_state.global_step)
    log_metric("max_steps", trainer_state.max_steps)
    log_extra("prompt_kind", ["messages" if isinstance(p, list) else "text" for p in prompts])
    return [0.0] * len(completions)


repetition = get_repetition_penalty_reward(ngram_size=2, max_penalty=-1.0)  # TRL's own, on completion_ids
