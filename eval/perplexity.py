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
- Logits at temperature 1 (the model's own distribution), scored by the trainer's
  own `rlvr.models.response_logprobs` on a `RolloutBatch`. An empty response
  (T = 0) has no perplexity: nan, which the medians skip.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rlvr.batch import RolloutBatch
from rlvr.models import response_logprobs

from .passk import check_int

__all__ = ["perplexity_cross_terms", "sequence_perplexity"]


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
    check_int(batch_size, "batch_size")
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
            rows = todo[s : s + batch_size]
            P = max(len(p_ids[i]) for i in rows)
            R = max(len(r_ids[i]) for i in rows)
            ids = torch.full((len(rows), P + R), pad_id, dtype=torch.long)  # [B, P + R]
            att = torch.zeros((len(rows), P + R), dtype=torch.long)
            resp_mask = torch.zeros((len(rows), R), dtype=torch.float32)  # [B, R]
            for b, i in enumerate(rows):
                lp, lr = len(p_ids[i]), len(r_ids[i])
                ids[b, P - lp : P] = torch.tensor(p_ids[i])
                ids[b, P : P + lr] = torch.tensor(r_ids[i])
                att[b, P - lp : P + lr] = 1
                resp_mask[b, :lr] = 1
            batch = RolloutBatch(
                input_ids=ids.to(device),
                attention_mask=att.to(device),
                response_mask=resp_mask,
                prompt_len=P,
                group=torch.arange(len(rows)),
                problems=[],
                completions=[],
                truncated=torch.zeros(len(rows), dtype=torch.bool),
            )
            logp, ent = (t.float().cpu() for t in response_logprobs(model, batch, with_entropy=True))  # [B, R]
            mean_nll = -(logp * resp_mask).sum(-1) / resp_mask.sum(-1)  # [B]
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
    base_prompts: Sequence[str] | None = None,
    ref_responses: Sequence[str] | None = None,
    model_tokenizer=None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    add_special_tokens: bool = True,
) -> dict[str, np.ndarray | dict[str, float]]:
    """The paper's perplexity cross-terms, per response and as medians, and mean token entropies.

    `model_responses[i]` (and `ref_responses[i]`, reference solutions, if given) answer
    `prompts[i]`; `base_responses[i]` answers `base_prompts[i]` (default: `prompts[i]`);
    repeat a prompt once per sample. `tokenizer` is the base's, `model_tokenizer` the
    model's (default: the same). Returns arrays "base_on_base" = PPL_base(Y_base),
    "base_on_model" = PPL_base(Y_model), "model_on_model" = PPL_model(Y_model),
    "base_on_ref" = PPL_base(Y_ref) when refs are given; "median": {same keys: nanmedian};
    "entropy": {"base": the base's mean token entropy on its responses, "model": the
    model's on its own} (means over responses, temperature 1).
    """
    base_prompts = prompts if base_prompts is None else base_prompts
    for name, rs, ps in (
        ("base_responses", base_responses, base_prompts),
        ("model_responses", model_responses, prompts),
        ("ref_responses", ref_responses, prompts),
    ):
        if rs is not None and len(rs) != len(ps):
            raise ValueError(f"{name} must have one response per prompt: {len(rs)} vs {len(ps)} prompts")
    kw = dict(batch_size=batch_size, device=device, add_special_tokens=add_special_tokens, return_entropy=True)
    mtok = model_tokenizer if model_tokenizer is not None else tokenizer
    base_on_base, ent_base = sequence_perplexity(base_model, tokenizer, base_prompts, base_responses, **kw)
    base_on_model, _ = sequence_perplexity(base_model, tokenizer, prompts, model_responses, **kw)
    model_on_model, ent_model = sequence_perplexity(model, mtok, prompts, model_responses, **kw)
    out: dict[str, np.ndarray | dict[str, float]] = {
        "base_on_base": base_on_base,
        "base_on_model": base_on_model,
        "model_on_model": model_on_model,
    }
    if ref_responses is not None:
        out["base_on_ref"] = sequence_perplexity(base_model, tokenizer, prompts, ref_responses, **kw)[0]
    out["median"] = {key: _nan_stat(np.nanmedian, v) for key, v in out.items()}
    out["entropy"] = {"base": _nan_stat(np.nanmean, ent_base), "model": _nan_stat(np.nanmean, ent_model)}
    return out


def _nan_stat(f, v: np.ndarray) -> float:
    return float(f(v)) if np.isfinite(v).any() else float("nan")
