"""Samplers of the hf engine: n samples per prompt, each distinct prompt prefilled once.

`SharedPrefillEngine` (sampler `shared_prefill`) returns what `HFEngine.generate` returns (same prompt ids,
masks, truncation flags), but where `HFEngine` repeats each prompt n times and has `generate` prefill every
copy, it prefills the distinct prompts of a generate-sized chunk once (batched, left padded), copies their
KV cache rows to the chunk's sequences, and decodes with the model's forward and transformers' own logits
warpers (temperature, top-k, top-p, applied in `generate`'s order). It cuts the sequences into the same
chunks as `HFEngine` and draws one `torch.multinomial` over the whole chunk per step until every sequence
has ended, as `generate` does, so it consumes the RNG as `generate` does: under greedy decoding its tokens
equal `generate`'s, under sampling its draws are `generate`'s, byte for byte.

`LeanEngine` (sampler `lean`, the eval's default) goes further: one forward row per distinct prefix a step
(sequences that drew the same tokens share their next-token distribution) and one uniform per sequence
(inverse CDF) instead of multinomial's vocabulary-sized noise. Its greedy tokens equal `generate`'s; its
sampled tokens follow `generate`'s distribution but are other draws (tests/test_sampler.py: token for token
under greedy decoding, chi-square tests under sampling that planted bugs fail).
"""

from __future__ import annotations

import inspect

import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from rlvr import rollout
from rlvr.batch import RolloutBatch
from rlvr.errors import ConfigError
from rlvr.models import position_ids
from rlvr.responses import check_prompt_lengths, make_batch, model_max_length
from rlvr.rollout import HFEngine, RolloutEngine, Sampling
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
        pos = position_ids(p_att)  # left-padded: generate's positions
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


class LeanEngine(SharedPrefillEngine):
    """n samples per prompt with one forward per distinct prefix a step (eval.sampler / rollout.sampler: lean).

    Each distinct prompt of a chunk is prefilled once (trimmed to its chunk's longest prompt; no attention
    mask when the chunk's prompts have one length, as at n >= batch_size). Sequences that have drawn the
    same tokens so far share a node: its next-token distribution is computed once, each of its sequences
    draws its own token from it (one uniform each, inverse CDF), and the nodes of the next step are the
    distinct (node, token) pairs, their KV cache rows copied from their parents'. A model that repeats
    itself (greedy: always; an RL-trained model: often) costs one forward row per distinct prefix, not
    per sample. Temperature, top-k and top-p are transformers' own warpers in `generate`'s order. Greedy
    tokens equal `generate`'s; sampled ones follow its distribution from other draws (tests/test_sampler.py),
    so its samples are not `hf`'s and the eval keys the base's cache by it."""

    def _chunk(self, ids: torch.Tensor, att: torch.Tensor, rows: torch.Tensor, sampling: Sampling) -> torch.Tensor:
        """The raw responses [len(rows), <= max_new_tokens] of the sequences whose prompts are ids[rows]."""
        model, tok = self.model, self.tokenizer
        device = next(model.parameters()).device
        distinct, node = torch.unique_consecutive(rows, return_inverse=True)  # node: each sequence's prefix
        p_att = att[distinct]
        first = int(p_att.any(0).long().argmax())  # columns left of the chunk's longest prompt are padding
        p_ids, p_att = ids[distinct, first:].to(device), p_att[:, first:].to(device)
        padded = not bool(p_att.all())
        pos = position_ids(p_att)  # left-padded: generate's positions
        extra = {"logits_to_keep": 1} if _takes_logits_to_keep(model) else {}
        out = model(
            input_ids=p_ids, attention_mask=p_att if padded else None, position_ids=pos, use_cache=True, **extra
        )
        cache, logits = out.past_key_values, out.logits[:, -1].float()  # [nodes, V]
        mask, last = p_att, pos[:, -1]
        node = node.to(device)
        procs = [] if sampling.temperature == 0 else warpers(sampling)
        eos, pad = tok.eos_token_id, tok.pad_token_id
        B, T = len(rows), sampling.max_new_tokens
        tokens = torch.full((B, T), pad, dtype=torch.long, device=device)
        live = torch.arange(B, device=device)  # the chunk's sequences still sampling
        for step in range(T):
            if sampling.temperature == 0:
                nxt = logits.argmax(-1)[node]
            else:
                for w in procs:
                    logits = w(None, logits)
                nxt = draw(torch.softmax(logits, -1), node)
            tokens[live, step] = nxt
            going = nxt != eos
            if step == T - 1 or not bool(going.any()):
                return tokens[:, : step + 1].cpu()
            live = live[going]
            node, parent, inp = next_nodes(node[going], nxt[going], logits.shape[-1])
            cache.batch_select_indices(parent)  # each node's keys and values: its parent's
            last = last[parent] + 1
            if padded:
                mask = torch.cat([mask[parent], mask.new_ones(len(parent), 1)], 1)
            out = model(
                input_ids=inp[:, None],
                attention_mask=mask if padded else None,
                position_ids=last[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            cache, logits = out.past_key_values, out.logits[:, -1].float()
        raise AssertionError("unreachable: the loop returns at its last step")


def next_nodes(node: torch.Tensor, token: torch.Tensor, V: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The next step's nodes of sequences at nodes `node` that drew `token`: the distinct (node, token)
    pairs. Returns each sequence's new node, and each new node's parent node and input token."""
    keys, node = torch.unique(node * V + token, return_inverse=True)
    return node, keys // V, keys % V


def draw(probs: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
    """One token per sequence, sequence i drawn from the distribution probs[node[i]] ([nodes, V]) by inverse
    CDF: one uniform a sequence (not the nodes x V exponentials of torch.multinomial), float64 sums. The rows'
    normalized CDFs are laid end to end, row d shifted by d, so one sorted search serves every sequence; a
    token of probability 0 is never drawn (its CDF entry equals its left neighbour's)."""
    D, V = probs.shape
    p = probs.double()
    cdf = p.cumsum(-1)
    if not bool((torch.isfinite(cdf[:, -1]) & (cdf[:, -1] > 0) & (p >= 0).all(-1)).all()):
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")  # as multinomial
    cdf = cdf / cdf[:, -1:] + torch.arange(D, dtype=cdf.dtype, device=cdf.device)[:, None]
    u = torch.rand(len(node), dtype=cdf.dtype, device=cdf.device) + node
    idx = torch.searchsorted(cdf.flatten(), u, right=True) - node * V
    last = V - 1 - (p > 0).flip(-1).long().argmax(-1)  # each row's last token of positive probability
    return torch.minimum(idx, last[node])


SAMPLERS = {"hf": HFEngine, "shared_prefill": SharedPrefillEngine, "lean": LeanEngine}
SAME_DRAWS_AS_HF = ("hf", "shared_prefill")  # samplers whose draws from a seed are HFEngine's


def with_sampler(engine, name: str):
    """`engine` sampling through sampler `name` (SAMPLERS) when it is an hf engine (HFEngine or one of the
    samplers, on the same model, tokenizer and batch size); any other engine (vllm, a server) as is."""
    if not isinstance(engine, HFEngine):
        return engine
    if name not in SAMPLERS:
        raise ConfigError(f"sampler: unknown sampler {name!r} (known: {', '.join(SAMPLERS)})")
    cls = SAMPLERS[name]
    return engine if type(engine) is cls else cls(engine.model, engine.tokenizer, batch_size=engine.batch_size)


def build_engine(name: str, model: torch.nn.Module, tokenizer, *, sampler: str = "hf", **kwargs) -> RolloutEngine:
    """rlvr.rollout.build_engine's engine `name` (kwargs: its options), an hf one sampling through `sampler`
    (rollout.sampler; config.check_run refuses a sampler other than hf for vllm)."""
    return with_sampler(rollout.build_engine(name, model, tokenizer, **kwargs), sampler)
