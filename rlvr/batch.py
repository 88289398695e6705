"""RolloutBatch: one step's samples and everything computed about them.

Layout: `input_ids` is prompt (left-padded to P) followed by response
(right-padded to R), so every response starts at column P and per-token
tensors over the response are [B, R]. Metadata (problems, completions) rides
along so an algorithm can read anything it needs without the trainer changing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from rlvr.tasks import Problem


@dataclass
class RolloutBatch:
    input_ids: torch.Tensor  # [B, P+R]
    attention_mask: torch.Tensor  # [B, P+R]
    response_mask: torch.Tensor  # [B, R] float, 1 on response tokens (eos included)
    prompt_len: int  # P
    group: torch.Tensor  # [B] long, prompt index within this process's batch
    problems: list[Problem]
    completions: list[str]
    truncated: torch.Tensor  # [B] bool: no eos within max_new_tokens
    rewards: torch.Tensor | None = None  # [B]
    old_logprobs: torch.Tensor | None = None  # [B, R]
    ref_logprobs: torch.Tensor | None = None  # [B, R]
    values: torch.Tensor | None = None  # [B, R]
    advantages: torch.Tensor | None = None  # [B, R]
    returns: torch.Tensor | None = None  # [B, R]
    # loss normalisers over the whole optimizer-step minibatch, all processes
    global_tokens: float | None = None
    global_seqs: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def response_ids(self) -> torch.Tensor:  # [B, R]
        return self.input_ids[:, self.prompt_len:]

    @property
    def response_lengths(self) -> torch.Tensor:  # [B]
        return self.response_mask.sum(-1)

    def select(self, idx: torch.Tensor | list[int]) -> "RolloutBatch":
        """Rows `idx` of every per-sample field."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == len(self):
                out[f.name] = v[idx]
            elif isinstance(v, list) and len(v) == len(self):
                out[f.name] = [v[i] for i in idx.tolist()]
            else:
                out[f.name] = v
        return replace(self, **out)

    def to(self, device: torch.device | str) -> "RolloutBatch":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})
