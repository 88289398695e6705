"""Reward shaping on token lengths: DAPO's overlong penalty (applied by the algorithm, not a verifier)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported only where tensors are made: grading workers import this package
    import torch


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), added to the task reward.

    0 up to max_len - buffer tokens, then falling linearly to -factor at max_len:
    r = min(-(|y| - (max_len - buffer)) / buffer * factor, 0).
    """
    import torch

    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    over = (lengths.float() - (max_len - buffer)) / buffer * factor
    return torch.clamp(-over, max=0.0)
