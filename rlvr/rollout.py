"""Rollout engines: turn prompts into a RolloutBatch of sampled responses.

`hf` uses transformers `generate` (batched, KV cache, left-padded prompts) on
the policy itself, so `sync_weights` has nothing to copy. `vllm` is an optional
extra for GPU machines and is imported only when selected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import GenerationConfig

from rlvr.batch import RolloutBatch
from rlvr.errors import ConfigError
from rlvr.tasks import Problem


@dataclass
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 16


class RolloutEngine(Protocol):
    def generate(self, problems: list[Problem], n: int, sampling: Sampling) -> RolloutBatch: ...

    def sync_weights(self, model: torch.nn.Module) -> None: ...


class HFEngine:
    """transformers `generate` on the (unwrapped) policy model."""

    def __init__(self, model: torch.nn.Module, tokenizer, *, batch_size: int = 256):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set one (e.g. tokenizer.pad_token = tokenizer.eos_token)")
        tokenizer.padding_side = "left"

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.model = model  # same module: generation reads the live weights

    @torch.no_grad()
    def generate(self, problems: list[Problem], n: int, sampling: Sampling) -> RolloutBatch:
        tok = self.tokenizer
        prompts = [p.prompt for p in problems]
        check_prompt_lengths(problems, tok, sampling.max_new_tokens, model_max_length(self.model))
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=True)
        P = enc["input_ids"].shape[1]
        device = next(self.model.parameters()).device
        ids = enc["input_ids"].repeat_interleave(n, 0)  # [B, P]
        att = enc["attention_mask"].repeat_interleave(n, 0)
        greedy = sampling.temperature == 0
        kwargs = dict(
            do_sample=not greedy,
            max_new_tokens=sampling.max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        if not greedy:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        was_training, own_config = self.model.training, getattr(self.model, "generation_config", None)
        # A checkpoint's generation_config.json (a hub model's repetition_penalty, no_repeat_ngram_size,
        # suppressed tokens, min length ...) fills every setting not passed here and would make the
        # samples come from another distribution than softmax(logits / T), the one the trainer scores.
        self.model.generation_config = GenerationConfig()
        self.model.eval()
        chunks = []
        try:
            for s in range(0, ids.shape[0], self.batch_size):
                out = self.model.generate(
                    input_ids=ids[s : s + self.batch_size].to(device),
                    attention_mask=att[s : s + self.batch_size].to(device),
                    **kwargs,
                )
                chunks.append(out[:, P:].cpu())
        finally:
            self.model.train(was_training)
            self.model.generation_config = own_config
        R = max(c.shape[1] for c in chunks)
        resp = torch.cat([torch.nn.functional.pad(c, (0, R - c.shape[1]), value=tok.pad_token_id) for c in chunks])
        return make_batch(ids, att, resp, problems, n, tok)


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
        n = len(tokenizer(p.prompt, add_special_tokens=True)["input_ids"])
        if n + max_new_tokens > limit:
            meta = p.metadata
            where = f"{meta['source']} row {meta['row']}" if "row" in meta else f"problem {p.id or p.prompt[:40]!r}"
            raise ConfigError(
                f"data: {where}: the prompt is {n} tokens; with rollout.max_new_tokens={max_new_tokens} that "
                f"exceeds the model's {limit} positions (max_position_embeddings); shorten it or drop the row"
            )


def build_engine(name: str, model: torch.nn.Module, tokenizer, *, batch_size: int = 256) -> RolloutEngine:
    """The rollout engine `name`; config validation (`rlvr.config.check_run`) refuses vllm first."""
    if name == "hf":
        return HFEngine(model, tokenizer, batch_size=batch_size)
    if name == "vllm":
        raise ConfigError("rollout.engine: the 'vllm' backend is not built yet; use 'hf'")
    raise ConfigError(f"rollout.engine: unknown engine {name!r} (known: hf)")
