"""Perplexity cross-terms (Yue et al. 2025, EVAL.md metric 7).

PPL_m(Y | x) = exp(-(1/T) sum_{t=1..T} log P_m(y_t | x, y_<t)), over the T response
tokens only. If the trained model's responses are about as likely under the base
model as the base model's own (PPL_base(Y_trained) ~ PPL_base(Y_base)), training
sharpened the base distribution rather than leaving it.

Choices:
- Prompt and response are tokenized separately and their ids concatenated
  (prompt_ids + response_ids), as the rollout produced them: the prompt with the
  tokenizer's special tokens (as `rlvr.rollout` does; pass
  `add_special_tokens=False` if yours was generated without), the response with
  none. The eos that ended a response is not in its decoded text, so it is not scored.
- Batches are laid out like `RolloutBatch`: prompts left-padded, responses
  right-padded, position ids counted from each row's first real token, so a
  padded row scores exactly as it would alone.
- Logits at temperature 1 (the model's own distribution). An empty response
  (T = 0) has no perplexity: nan, which the medians skip.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["perplexity_cross_terms", "sequence_perplexity"]


def _response_nll(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  R: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token negative log-likelihood and entropy of the last R columns (the responses). [B, R] x2"""
    pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # left padding -> positions from 0
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos, use_cache=False)
    try:
        logits = model(**kwargs, logits_to_keep=R + 1).logits  # columns P-1 .. P+R-1
    except TypeError:  # a model without logits_to_keep: keep every column, slice below
        logits = model(**kwargs).logits
    logits = logits[:, -R - 1:-1]  # [B, R, V]: column t predicts response token t
    targets = input_ids[:, -R:]  # [B, R]
    nll = torch.empty(targets.shape, dtype=torch.float32, device=logits.device)
    ent = torch.empty_like(nll)
    for b in range(logits.shape[0]):  # one row at a time: a float32 copy of [R, V], not [B, R, V]
        row = logits[b].float()
        logz = torch.logsumexp(row, -1)
        nll[b] = logz - row.gather(-1, targets[b, :, None]).squeeze(-1)
        logp = row - logz[:, None]
        ent[b] = -(logp.exp() * torch.nan_to_num(logp, neginf=0.0)).sum(-1)
    return nll, ent


@torch.no_grad()
def sequence_perplexity(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    add_special_tokens: bool = True,
    return_entropy: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """PPL_model(response_i | prompt_i) for each pair, over the response tokens only. [N]

    With `return_entropy`, also each response's mean token entropy under the
    model (at temperature 1), from the same forward pass.

    Sequences are sorted by length and batched (`batch_size` rows, which bounds the
    [batch, response, vocab] logits), then returned in the input order. `device`
    defaults to the model's. The model is put in eval mode for the call and
    restored after. Empty responses give nan; an empty prompt is an error (the
    first response token would have no context).
    """
    if len(prompts) != len(responses):
        raise ValueError(f"one response per prompt: got {len(prompts)} prompts and {len(responses)} responses")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token to pad with")
    p_ids = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    r_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
    for i, p in enumerate(p_ids):
        if not p:
            raise ValueError(f"prompt {i} tokenizes to no tokens: the first response token would have no context")
    if device is None:
        device = next(model.parameters()).device
    out = np.full(len(prompts), np.nan, dtype=np.float64)
    entropy = np.full(len(prompts), np.nan, dtype=np.float64)
    todo = sorted((i for i in range(len(prompts)) if r_ids[i]), key=lambda i: (len(p_ids[i]) + len(r_ids[i]), i))
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(todo), batch_size):
            rows = todo[s:s + batch_size]
            P = max(len(p_ids[i]) for i in rows)
            R = max(len(r_ids[i]) for i in rows)
            ids = torch.full((len(rows), P + R), pad_id, dtype=torch.long)  # [B, P + R]
            att = torch.zeros((len(rows), P + R), dtype=torch.long)
            resp_mask = torch.zeros((len(rows), R), dtype=torch.float32)  # [B, R]
            for b, i in enumerate(rows):
                lp, lr = len(p_ids[i]), len(r_ids[i])
                ids[b, P - lp:P] = torch.tensor(p_ids[i])
                ids[b, P:P + lr] = torch.tensor(r_ids[i])
                att[b, P - lp:P + lr] = 1
                resp_mask[b, :lr] = 1
            nll, ent = (t.cpu() for t in _response_nll(model, ids.to(device), att.to(device), R))  # [B, R]
            mean_nll = (nll * resp_mask).sum(-1) / resp_mask.sum(-1)  # [B]
            out[rows] = torch.exp(mean_nll.double()).numpy()
            entropy[rows] = ((ent * resp_mask).sum(-1) / resp_mask.sum(-1)).double().numpy()
    finally:
        model.train(was_training)
    return (out, entropy) if return_entropy else out


def perplexity_cross_terms(
    base_model: torch.nn.Module,
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    base_responses: Sequence[str],
    model_responses: Sequence[str],
    *,
    ref_responses: Sequence[str] | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    add_special_tokens: bool = True,
) -> dict[str, np.ndarray | dict[str, float]]:
    """The paper's perplexity cross-terms, per response and as medians.

    `base_responses[i]`, `model_responses[i]` (and `ref_responses[i]`, reference
    solutions, if given) answer `prompts[i]`; repeat a prompt once per sample.
    Returns arrays "base_on_base" = PPL_base(Y_base), "base_on_model" =
    PPL_base(Y_model), "model_on_model" = PPL_model(Y_model), "base_on_ref" =
    PPL_base(Y_ref) when refs are given, and "median": {same keys: nanmedian}.
    """
    for name, rs in (("base_responses", base_responses), ("model_responses", model_responses),
                     ("ref_responses", ref_responses)):
        if rs is not None and len(rs) != len(prompts):
            raise ValueError(f"{name} must have one response per prompt: {len(rs)} vs {len(prompts)} prompts")
    kw = dict(batch_size=batch_size, device=device, add_special_tokens=add_special_tokens)
    out: dict[str, np.ndarray | dict[str, float]] = {
        "base_on_base": sequence_perplexity(base_model, tokenizer, prompts, base_responses, **kw),
        "base_on_model": sequence_perplexity(base_model, tokenizer, prompts, model_responses, **kw),
        "model_on_model": sequence_perplexity(model, tokenizer, prompts, model_responses, **kw),
    }
    if ref_responses is not None:
        out["base_on_ref"] = sequence_perplexity(base_model, tokenizer, prompts, ref_responses, **kw)
    out["median"] = {
        key: (float(np.nanmedian(v)) if np.isfinite(v).any() else float("nan")) for key, v in out.items()
    }
    return out
