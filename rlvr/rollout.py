"""Rollout engines: turn prompts into a RolloutBatch of sampled responses.

`hf` uses transformers `generate` (batched, KV cache, left-padded prompts) on
the policy itself, so `sync_weights` has nothing to copy. `vllm` (rlvr/vllm_engine.py)
is an optional extra, imported only when selected: a colocated vLLM that the trainer
writes the policy's weights into after every optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import GenerationConfig

from rlvr.batch import RolloutBatch
from rlvr.errors import ConfigError
from rlvr.responses import check_prompt_lengths, make_batch, model_max_length  # noqa: F401  (re-exported)
from rlvr.tasks import Problem
from rlvr.templates import encode_prompts


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
        check_prompt_lengths(problems, tok, sampling.max_new_tokens, model_max_length(self.model))
        enc = encode_prompts(tok, problems, return_tensors="pt", padding=True)  # one BOS, as the model was trained
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
            # the trainer gathers sharded parameters (ZeRO-3, FSDP) before generating: no lockstep with other
            # processes, which would deadlock when they make different numbers of calls (an eval's share)
            synced_gpus=False,
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


def build_engine(
    name: str,
    model: torch.nn.Module,
    tokenizer,
    *,
    batch_size: int = 256,
    vllm_memory: float | None = None,
    vllm_sleep: bool = False,
) -> RolloutEngine:
    """The rollout engine `name`: `hf`, or `vllm` (one clear line when vllm is not installed), with vLLM's
    GPU memory options (rollout.vllm_memory, rollout.vllm_sleep; config.check_run refuses them for hf)."""
    if name == "hf":
        return HFEngine(model, tokenizer, batch_size=batch_size)
    if name == "vllm":
        from rlvr.vllm_engine import VLLMEngine  # vllm is an optional extra: imported only when selected

        return VLLMEngine(model, tokenizer, gpu_memory_utilization=vllm_memory, sleep=vllm_sleep)
    raise ConfigError(f"rollout.engine: unknown engine {name!r} (known: hf, vllm)")
