"""From sampled token ids to a RolloutBatch, shared by the rollout engines (rlvr/rollout.py's hf,
rlvr/vllm_engine.py's vllm), and the check that prompts fit the model's positions."""

from __future__ import annotations

import torch

from rlvr.batch import RolloutBatch
from rlvr.errors import ConfigError
from rlvr.tasks import Problem
from rlvr.templates import encode_prompts


def make_batch(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    responses: torch.Tensor,
    problems: list[Problem],
    n: int,
    tokenizer,
) -> RolloutBatch:
    """Assemble a RolloutBatch from left-padded prompts [B, P] and raw responses [B, R].

    Everything after the first eos is padding; a response without eos is truncated.
    """
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    B, R = responses.shape
    is_eos = responses == eos  # [B, R]
    has_eos = is_eos.any(-1)  # [B]
    first = torch.where(has_eos, is_eos.float().argmax(-1), torch.full((B,), R))  # index of first eos, or R
    pos = torch.arange(R)[None, :]
    resp_mask = (pos <= first[:, None]).float()  # [B, R], the eos itself included
    responses = torch.where(resp_mask.bool(), responses, torch.full_like(responses, pad))
    completions = tokenizer.batch_decode(responses, skip_special_tokens=True)
    return RolloutBatch(
        input_ids=torch.cat([prompt_ids, responses], 1),
        attention_mask=torch.cat([prompt_mask, resp_mask.long()], 1),
        response_mask=resp_mask,
        prompt_len=prompt_ids.shape[1],
        group=torch.arange(len(problems)).repeat_interleave(n),
        problems=[p for p in problems for _ in range(n)],
        completions=completions,
        truncated=~has_eos,
    )


def model_max_length(model: torch.nn.Module) -> int | None:
    """The most positions the model takes (its config's max_position_embeddings), None if unknown."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 0 else None


def check_prompt_lengths(problems: list[Problem], tokenizer, max_new_tokens: int, limit: int | None) -> None:
    """Refuse a prompt whose tokens plus rollout.max_new_tokens exceed the model's positions
    (`limit`), naming its row: past it a model samples garbage, or allocates a batch padded to
    the longest prompt (a 1 MB prompt: gigabytes) before failing."""
    if limit is None:
        return
    for p in problems:
        if len(p.prompt.encode()) + 2 + max_new_tokens <= limit:  # a token is at least a byte (+ bos, eos)
            continue
        n = len(encode_prompts(tokenizer, [p])["input_ids"][0])
        if n + max_new_tokens > limit:
            meta = p.metadata
            where = f"{meta['source']} row {meta['row']}" if "row" in meta else f"problem {p.id or p.prompt[:40]!r}"
            raise ConfigError(
                f"data: {where}: the prompt is {n} tokens; with rollout.max_new_tokens={max_new_tokens} that "
                f"exceeds the model's {limit} positions (max_position_embeddings); shorten it or drop the row"
            )
