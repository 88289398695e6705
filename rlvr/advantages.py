"""Advantage helpers shared by the algorithms, below `algorithms/` so no algorithm imports a
sibling: group statistics (GRPO, RLOO, REINFORCE++ baseline), the global batch std (GRPO's
`scale: batch`, and the trainer's logged `reward/std`), returns-to-go (REINFORCE++, ReMax) and
the outcome-on-last-token layout. Shapes: [B] per sample, [B, R] per response token.
"""

from __future__ import annotations

import torch

from rlvr.losses import all_reduce_sum


def group_mean_std(rewards: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean and Bessel std of its group's rewards. [B], [B] -> [B], [B]."""
    ids, inv = torch.unique(group, return_inverse=True)
    n = torch.zeros(len(ids), dtype=torch.float64, device=rewards.device).index_add_(
        0, inv, torch.ones_like(rewards, dtype=torch.float64)
    )
    s = torch.zeros_like(n).index_add_(0, inv, rewards.double())
    mean = s / n  # [G]
    sq = torch.zeros_like(n).index_add_(0, inv, (rewards.double() - mean[inv]) ** 2)
    std = torch.sqrt(sq / (n - 1).clamp(min=1))  # group of one -> 0
    return mean[inv].to(rewards.dtype), std[inv].to(rewards.dtype)


def batch_std(rewards: torch.Tensor) -> torch.Tensor:
    """Bessel std of rewards over the global batch (all processes)."""
    r = rewards.double()
    stats = all_reduce_sum(torch.stack([r.sum(), torch.tensor(float(r.numel()), dtype=torch.float64, device=r.device)]))
    mean = stats[0] / stats[1]
    sq = all_reduce_sum(((r - mean) ** 2).sum())
    return torch.sqrt(sq / (stats[1] - 1).clamp(min=1)).to(rewards.dtype)


def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + gamma * G_{t+1} over the masked tokens. [B, R] -> [B, R]"""
    r = torch.where(mask.bool(), rewards, 0.0)
    if gamma == 1.0:
        return torch.where(mask.bool(), r.flip(-1).cumsum(-1).flip(-1), 0.0)
    out = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):  # vectorised over the batch
        running = r[:, t] + gamma * running
        out[:, t] = running
    return torch.where(mask.bool(), out, 0.0)


def last_token(outcome: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A scalar per response [B] placed on its last response token, 0 elsewhere: [B, R]."""
    last = (mask.sum(-1).long() - 1).clamp(min=0)  # [B]
    r = torch.zeros_like(mask)
    r[torch.arange(len(mask), device=mask.device), last] = outcome.to(r.dtype)
    return r
