"""Verifiable rewards: a float per (problem, completion).

A reward function takes the batch's problems and completions and returns one
score per sample. A verifier that raises scores 0 for that sample and is
counted in the metrics (`reward/errors`); it never stops training.
"""

from __future__ import annotations

import traceback
from typing import Callable

import torch

from rlvr.tasks import Problem, score_reasoning_gym

RewardFn = Callable[[list[Problem], list[str]], list[float]]


def reasoning_gym_reward(problems: list[Problem], completions: list[str]) -> list[float]:
    """The task's own reasoning-gym `score_answer`."""
    return [score_reasoning_gym(c, p) for p, c in zip(problems, completions)]


class RewardRunner:
    """Scores a batch, isolating failures to the sample that caused them."""

    def __init__(self, fn: RewardFn = reasoning_gym_reward):
        self.fn = fn
        self.errors = 0
        self._shown = False

    def __call__(self, problems: list[Problem], completions: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
        try:
            scores = list(self.fn(problems, completions))
            errors = 0
        except Exception:
            scores, errors = [], 0
            for p, c in zip(problems, completions):
                try:
                    scores.append(self.fn([p], [c])[0])
                except Exception:
                    self._show_once()
                    scores.append(0.0)
                    errors += 1
        if len(scores) != len(completions):
            raise ValueError(f"reward function returned {len(scores)} scores for {len(completions)} completions")
        self.errors += errors
        out = torch.tensor([0.0 if s is None else float(s) for s in scores])
        return out, {"reward/errors": float(errors)}

    def _show_once(self) -> None:
        if not self._shown:
            self._shown = True
            print("rlvr: the reward function raised; scoring that sample 0 (shown once):\n" + traceback.format_exc())


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), added to the task reward.

    0 up to max_len - buffer tokens, then falling linearly to -factor at max_len:
    r = min(-(|y| - (max_len - buffer)) / buffer * factor, 0).
    """
    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    over = (lengths.float() - (max_len - buffer)) / buffer * factor
    return torch.clamp(-over, max=0.0)
