"""RolloutBatch: one step's samples and everything computed about them.

Layout: `input_ids` is prompt (left-padded to P) followed by response
(right-padded to R), so every response starts at column P and per-token
tensors over the response are [B, R]. Metadata (problems, completions) rides
along so an algorithm can read anything it needs without the trainer changing.

`extras` holds an algorithm's own per-sample tensors (ReMax's greedy baseline
rewards, PPO's old values): whatever an algorithm computes in its hooks and reads
back in `compute_advantages` or `compute_loss`. `select`, `to` and
`concat_batches` carry them like the named fields, so a new algorithm adds data
to the batch without a new field here.
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
    rewards: torch.Tensor | None = None  # [B] what the algorithm optimises (after shaping)
    scores: torch.Tensor | None = None  # [B] the verifier's score, before shaping
    old_logprobs: torch.Tensor | None = None  # [B, R]
    ref_logprobs: torch.Tensor | None = None  # [B, R]
    advantages: torch.Tensor | None = None  # [B, R]
    returns: torch.Tensor | None = None  # [B, R]
    # the rollout engine's own log-probs of the sampled tokens (vllm), 0 past the response; None for hf
    rollout_logprobs: torch.Tensor | None = None  # [B, R]
    # loss normalisers over the whole optimizer-step minibatch, all processes
    global_tokens: float | None = None
    global_seqs: float | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # an algorithm's own per-sample tensors [B, ...]
    metrics: dict[str, float] = field(default_factory=dict)  # scalars to log for this step (e.g. kl, kl_coef)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def response_ids(self) -> torch.Tensor:  # [B, R]
        return self.input_ids[:, self.prompt_len :]

    @property
    def response_lengths(self) -> torch.Tensor:  # [B]
        return self.response_mask.sum(-1)

    def _per_sample(self, v: Any) -> bool:
        return isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == len(self)

    def select(self, idx: torch.Tensor | list[int]) -> "RolloutBatch":
        """Rows `idx` of every per-sample field and extra."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        out: dict[str, Any] = {"extras": {k: v[idx] if self._per_sample(v) else v for k, v in self.extras.items()}}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "extras":
                continue
            if self._per_sample(v):
                out[f.name] = v[idx]
            elif isinstance(v, list) and len(v) == len(self):
                out[f.name] = [v[i] for i in idx.tolist()]
            else:
                out[f.name] = v
        return replace(self, **out)

    def to(self, device: torch.device | str) -> "RolloutBatch":
        moved: dict[str, Any] = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        moved["extras"] = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.extras.items()}
        return replace(self, **moved)


def concat_batches(batches: list[RolloutBatch], pad_id: int) -> RolloutBatch:
    """Join batches with different prompt/response widths: prompts re-padded on the
    left, responses on the right. Group ids are renumbered to stay distinct.
    Per-token results (log-probs, advantages) must not exist yet; per-sample
    extras [B] present in every batch are joined, others refused."""
    if len(batches) == 1:
        return batches[0]
    P = max(b.prompt_len for b in batches)
    R = max(b.response_mask.shape[1] for b in batches)
    ids, att, rmask, rlp, groups, offset = [], [], [], [], [], 0
    if len({b.rollout_logprobs is None for b in batches}) > 1:
        raise ValueError("concat_batches: rollout_logprobs present in some batches only (two engines?)")
    for b in batches:
        if b.old_logprobs is not None or b.advantages is not None:
            raise ValueError("concat_batches: join batches before computing log-probs or advantages")
        lp, rp = P - b.prompt_len, R - b.response_mask.shape[1]
        pi, ri = b.input_ids[:, : b.prompt_len], b.input_ids[:, b.prompt_len :]
        pa, ra = b.attention_mask[:, : b.prompt_len], b.attention_mask[:, b.prompt_len :]
        pad = torch.nn.functional.pad
        ids.append(torch.cat([pad(pi, (lp, 0), value=pad_id), pad(ri, (0, rp), value=pad_id)], 1))
        att.append(torch.cat([pad(pa, (lp, 0)), pad(ra, (0, rp))], 1))
        rmask.append(pad(b.response_mask, (0, rp)))
        if b.rollout_logprobs is not None:
            rlp.append(pad(b.rollout_logprobs, (0, rp)))
        groups.append(b.group + offset)
        offset += int(b.group.max()) + 1 if len(b) else 0
    cat = lambda name: None if getattr(batches[0], name) is None else torch.cat([getattr(b, name) for b in batches])
    extras = {}
    for k in set().union(*(b.extras for b in batches)):
        parts = [b.extras.get(k) for b in batches]
        if not all(
            isinstance(v, torch.Tensor) and v.dim() == 1 and v.shape[0] == len(b)
            for v, b in zip(parts, batches, strict=True)
        ):
            raise ValueError(f"concat_batches: extra {k!r} is not a per-sample [B] tensor in every batch")
        extras[k] = torch.cat(parts)
    return RolloutBatch(
        input_ids=torch.cat(ids),
        attention_mask=torch.cat(att),
        response_mask=torch.cat(rmask),
        prompt_len=P,
        group=torch.cat(groups),
        problems=[p for b in batches for p in b.problems],
        completions=[c for b in batches for c in b.completions],
        truncated=torch.cat([b.truncated for b in batches]),
        rollout_logprobs=torch.cat(rlp) if rlp else None,
        rewards=cat("rewards"),
        scores=cat("scores"),
        extras=extras,
    )
