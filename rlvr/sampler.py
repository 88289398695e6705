"""Shared-prefill sampling: n samples per prompt, each distinct prompt prefilled once.

`SharedPrefillEngine` returns what `HFEngine.generate` returns (same prompt ids, masks, truncation flags),
but where `HFEngine` repeats each prompt n times and has `generate` prefill every copy, it prefills the
distinct prompts of a generate-sized chunk once (batched, left padded), copies their KV cache rows to
the chunk's sequences, and decodes with the model's forward and transformers' own logits warpers
(temperature, top-k, top-p, applied in `generate`'s order). It cuts the sequences into the same chunks
as `HFEngine` and draws one `torch.multinomial` over the whole chunk per step until every sequence has
ended, as `generate` does, so it consumes the RNG as `generate` does: under greedy decoding its tokens
equal `generate`'s, under sampling they follow the same distribution (tests/test_sampler.py).
"""

from __future__ import annotations

import inspect

import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from rlvr.batch import RolloutBatch
from rlvr.responses import check_prompt_lengths, make_batch, model_max_length
from rlvr.rollout import HFEngine, Sampling
from rlvr.tasks import Problem
from rlvr.templates import encode_prompts


def warpers(sampling: Sampling) -> list:
    """The logits warpers `generate` builds for these settings (GenerationConfig's conditions, its order)."""
    out = []
    if sampling.temperature != 1.0:
        out.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k:
        out.append(TopKLogitsWarper(top_k=sampling.top_k, min_tokens_to_keep=1))
    if sampling.top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=sampling.top_p, min_tokens_to_keep=1))
    return out


class SharedPrefillEngine(HFEngine):
    """`HFEngine` with one prefill per distinct prompt and a lean decode loop (module docstring)."""

    @torch.no_grad()
    def generate(self, problems: list[Problem], n: int, sampling: Sampling) -> RolloutBatch:
        tok = self.tokenizer
        check_prompt_lengths(problems, tok, sampling.max_new_tokens, model_max_length(self.model))
        enc = encode_prompts(tok, problems, return_tensors="pt", padding=True)  # one BOS, as the model was trained
        was_training = self.model.training
        self.model.eval()
        chunks = []
        try:
            for s in range(0, len(problems) * n, self.batch_size):
                rows = torch.arange(s, min(s + self.batch_size, len(problems) * n)) // n  # problem of each sequence
                chunks.append(self._chunk(enc["input_ids"], enc["attention_mask"], rows, sampling))
        finally:
            self.model.train(was_training)
        R = max(c.shape[1] for c in chunks)
        resp = torch.cat([torch.nn.functional.pad(c, (0, R - c.shape[1]), value=tok.pad_token_id) for c in chunks])
        ids = enc["input_ids"].repeat_interleave(n, 0)
        att = enc["attention_mask"].repeat_interleave(n, 0)
        return make_batch(ids, att, resp, problems, n, tok)

    def _chunk(self, ids: torch.Tensor, att: torch.Tensor, rows: torch.Tensor, sampling: Sampling) -> torch.Tensor:
        """The raw responses [len(rows), <= max_new_tokens] of the sequences whose prompts are ids[rows]."""
        model, tok = self.model, self.tokenizer
        device = next(model.parameters()).device
        distinct, expand = torch.unique_consecutive(rows, return_inverse=True)
        p_ids, p_att = ids[distinct].to(device), att[distinct].to(device)
        pos = (p_att.long().cumsum(-1) - 1).masked_fill(p_att == 0, 0)  # generate's position ids
        extra = {"logits_to_keep": 1} if _takes_logits_to_keep(model) else {}
        out = model(input_ids=p_ids, attention_mask=p_att, position_ids=pos, use_cache=True, **extra)
        cache = out.past_key_values
        expand = expand.to(device)
        cache.batch_select_indices(expand)  # prompt i's keys and values copied to each of its sequences
        logits = out.logits[:, -1].float()[expand]
        mask = p_att[expand]
        last = pos[expand, -1]
        greedy = sampling.temperature == 0
        procs = [] if greedy else warpers(sampling)
        eos, pad = tok.eos_token_id, tok.pad_token_id
        B = len(rows)
        tokens = torch.full((B, sampling.max_new_tokens), pad, dtype=torch.long, device=device)
        live = torch.arange(B, device=device)  # the chunk's rows still sampling; ended rows leave the batch
        for step in range(sampling.max_new_tokens):
            if greedy:
                nxt = logits.argmax(-1)
            else:
                for w in procs:
                    logits = w(None, logits)
                probs = torch.softmax(logits, -1)
                # torch.multinomial(probs, 1) is argmax(probs / Exp(1) noise); drawing the noise of the whole
                # chunk every step, as generate's multinomial does, keeps the RNG stream generate's
                noise = torch.empty(B, probs.shape[-1], device=device).exponential_(1)
                nxt = (probs / noise[live]).argmax(-1)
            tokens[live, step] = nxt
            going = nxt != eos
            if step == sampling.max_new_tokens - 1 or not bool(going.any()):
                return tokens[:, : step + 1].cpu()
            if not bool(going.all()):
                keep = going.nonzero().squeeze(1)
                live, nxt, mask, last = live[keep], nxt[keep], mask[keep], last[keep]
                cache.batch_select_indices(keep)
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], 1)
            last = last + 1
            out = model(
                input_ids=nxt[:, None],
                attention_mask=mask,
                position_ids=last[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            logits = out.logits[:, -1].float()
        raise AssertionError("unreachable: the loop returns at its last step")


def _takes_logits_to_keep(model: torch.nn.Module) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
