"""Loss primitives shared by every algorithm (see design/ALGORITHMS.md, "Shared primitives").

One implementation each of: masked reductions, global whitening, loss aggregation
(`agg_loss`), the KL estimators, the clipped policy-gradient loss, the clipped value
loss, entropy and log-probs from logits. Algorithms compose these; none re-implements
them, so a normalisation choice is made in exactly one place.

Conventions:
- Tensors are [B, T] over response tokens; `mask` is 1 on response tokens and 0 on
  prompt/padding, float or bool. Values under mask 0 never reach a result (they may
  hold garbage, even inf/NaN).
- "Local" functions (`masked_*`) see only this process's tensors. `whiten` reduces its
  statistics across processes. `agg_loss` takes the global normalisers from the
  caller, who knows the whole optimizer-step minibatch (all micro-batches, all
  processes): summing its per-micro-batch results then gives the global loss, which
  is what makes 1 micro-batch x 8 accumulation steps equal 8 x 1, and 2 processes
  equal 1.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = [
    "AGG_MODES",
    "KL_ESTIMATORS",
    "agg_loss",
    "all_reduce_sum",
    "clipped_pg_loss",
    "entropy_from_logits",
    "kl_penalty",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "value_loss",
    "whiten",
]

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("k1", "k2", "k3")
_KL_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}

# log-ratios beyond +-20 only arise from numerically broken tokens; exp(20) ~ 5e8 is
# already far past any clip range, and clamping keeps exp() finite in fp32.
_LOG_RATIO_CLAMP = 20.0
# verl's bound on the per-token k3 value, so one broken token cannot dominate the KL.
_K3_VALUE_CLAMP = 10.0


# --------------------------------------------------------------------------- reductions


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over all processes when torch.distributed runs with world size > 1.

    Always returns a new, detached tensor (the input is never modified in place, and no
    autograd graph crosses processes); single-process it is `x.detach()`, same values.
    Works with gloo (CPU) and nccl (CUDA) for the dtypes they support (not bool).
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        y = x.detach().clone()  # all_reduce is in place: work on a private copy
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y
    # Detached here too, so that a caller behaves the same with 1 process as with 2.
    return x.detach()


def _weights(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Mask as weights in `like`'s dtype (bool masks become 0/1)."""
    return mask.to(like.dtype)


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Sum of x * mask over `dim` (all dims when None). Local to this process."""
    m = _weights(mask, x)  # [B, T]
    # where() rather than x * m alone: padding may hold inf/NaN and 0 * inf = NaN.
    xm = torch.where(m != 0, x * m, torch.zeros((), dtype=x.dtype, device=x.device))  # [B, T]
    return xm.sum() if dim is None else xm.sum(dim=dim)


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, with 0 where den == 0 (an empty row or batch), never NaN."""
    den = torch.as_tensor(den, dtype=num.dtype, device=num.device)
    return torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), 0.0)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Mean of x over the masked tokens (over `dim`, or all). Empty rows/batch give 0."""
    return _safe_div(masked_sum(x, mask, dim), masked_sum(torch.ones_like(x), mask, dim))


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of x over all masked tokens of this process (Bessel-corrected by default).

    Too few tokens for the estimator (0, or 1 with `unbiased`) gives 0 rather than NaN.
    """
    mean = masked_mean(x, mask)
    ss = masked_sum((x - mean) ** 2, mask)
    n = masked_sum(torch.ones_like(x), mask)
    return _safe_div(ss, (n - 1).clamp_min(0) if unbiased else n)


def whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    *,
    unbiased: bool = True,
    eps: float = 1e-8,
    shift_mean: bool = True,
) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked tokens of the GLOBAL batch.

    Statistics are reduced across processes (sum and count first, then the sum of
    squared deviations from the global mean: two passes, so no catastrophic
    cancellation of E[x^2] - E[x]^2). `unbiased=True` is verl's Bessel-corrected
    variance; `unbiased=False` is OpenRLHF's biased one. `shift_mean=False` adds the
    mean back (only the scale changes). Output is 0 wherever mask is 0.

    Every process must call this (it is a collective), even one with no tokens.
    Statistics carry no gradient; advantages never need one.
    """
    with torch.no_grad():
        # float64 statistics: a global batch can hold millions of tokens.
        xd = x.detach().to(torch.float64)  # [B, T]
        ones = torch.ones_like(xd)
        sum_count = all_reduce_sum(torch.stack([masked_sum(xd, mask), masked_sum(ones, mask)]))
        total, count = sum_count[0], sum_count[1]
        mean = _safe_div(total, count)
        ss = all_reduce_sum(masked_sum((xd - mean) ** 2, mask))
        var = _safe_div(ss, (count - 1).clamp_min(0) if unbiased else count)
        inv_std = torch.rsqrt(var + eps)
    out = (x - mean.to(x.dtype)) * inv_std.to(x.dtype)  # [B, T]
    if not shift_mean:
        out = out + mean.to(x.dtype)
    return torch.where(_weights(mask, x) != 0, out, torch.zeros((), dtype=x.dtype, device=x.device))


# --------------------------------------------------------------------------- aggregation


def agg_loss(
    loss: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    *,
    global_tokens: float | torch.Tensor | None = None,
    global_seqs: float | torch.Tensor | None = None,
    norm_constant: float | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss [B, T] to a scalar, normalised by global counts.

    Modes (S_i = sum_t loss_it * mask_it, n_i = sum_t mask_it):
      token-mean               sum_i S_i / global_tokens              (DAPO; verl default)
      seq-mean-token-mean      sum_i (S_i / n_i) / global_seqs       (original GRPO, PPO-RLHF)
      seq-mean-token-sum       sum_i S_i / global_seqs
      seq-mean-token-sum-norm  sum_i S_i / (global_seqs * norm_constant)   (Dr. GRPO)

    `global_tokens` / `global_seqs` are the token / sequence counts of the whole
    optimizer-step minibatch, over all micro-batches and processes; they default to
    this call's own counts (mask.sum() and B), right only when this call sees the
    whole minibatch. `norm_constant` is a config value (default in configs: the max
    response length), deliberately not the padded length of this batch, which would
    make the loss scale depend on how the batch happened to be padded.
    """
    if mode not in AGG_MODES:
        raise ValueError(f"unknown agg_loss mode {mode!r}; allowed: {', '.join(AGG_MODES)}")
    if mode == "seq-mean-token-sum-norm":
        if norm_constant is None:
            raise ValueError(
                "agg_loss mode 'seq-mean-token-sum-norm' requires norm_constant (set it to the max response length)"
            )
        if norm_constant <= 0:
            raise ValueError(f"norm_constant must be > 0, got {norm_constant}")

    def _count(value: float | torch.Tensor) -> torch.Tensor:
        # Normalisers are constants of the step: never part of the autograd graph.
        if isinstance(value, torch.Tensor):
            return value.detach().to(device=loss.device, dtype=loss.dtype)
        return torch.tensor(float(value), device=loss.device, dtype=loss.dtype)

    seqs = _count(loss.shape[0] if global_seqs is None else global_seqs)
    if mode == "token-mean":
        tokens = _count(masked_sum(torch.ones_like(loss), mask) if global_tokens is None else global_tokens)
        return _safe_div(masked_sum(loss, mask), tokens)
    if mode == "seq-mean-token-mean":
        per_seq = masked_mean(loss, mask, dim=-1)  # [B]; an empty row contributes 0
        return _safe_div(per_seq.sum(), seqs)
    if mode == "seq-mean-token-sum":
        return _safe_div(masked_sum(loss, mask), seqs)
    # seq-mean-token-sum-norm
    return _safe_div(masked_sum(loss, mask), seqs * float(norm_constant))


# --------------------------------------------------------------------------- KL


def kl_penalty(logprob: torch.Tensor, ref_logprob: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token KL estimate [B, T] from log-probs of the sampled tokens.

    delta = logprob - ref_logprob (Schulman's estimators of KL(pi || pi_ref)):
      k1 ("kl")          delta                        unbiased, high variance, can be < 0
      k2 ("mse")         delta^2 / 2                  biased, low variance
      k3 ("low_var_kl")  exp(-delta) + delta - 1      unbiased, >= 0, low variance;
                         log-ratio clamped to +-20 and value to +-10 (verl)
    Not masked: aggregate with `agg_loss` or multiply by the mask.
    """
    name = _KL_ALIASES.get(kind, kind)
    if name not in KL_ESTIMATORS:
        allowed = list(KL_ESTIMATORS) + list(_KL_ALIASES)
        raise ValueError(f"unknown KL estimator {kind!r}; allowed: {', '.join(allowed)}")
    delta = logprob - ref_logprob  # [B, T]
    if name == "k1":
        return delta
    if name == "k2":
        return 0.5 * delta.square()
    log_ratio = (-delta).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)  # ref - logprob
    return (log_ratio.exp() - log_ratio - 1).clamp(-_K3_VALUE_CLAMP, _K3_VALUE_CLAMP)


# --------------------------------------------------------------------------- PG / value


def clipped_pg_loss(
    logprob: torch.Tensor,
    old_logprob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float | None = 3.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate per token, with asymmetric clip (DAPO) and dual clip.

    rho = exp(clamp(logprob - old_logprob, +-20))
    L = max(-A rho, -A clip(rho, 1 - clip_low, 1 + clip_high))
    dual clip (A < 0 only, clip_c > 1): L = min(L, -A clip_c), which bounds the loss of
    a token whose ratio exploded on a negative advantage.

    Returns the unaggregated loss [B, T] (0 under mask 0; aggregate with `agg_loss`)
    and 0-dim metrics, masked means over this call's tokens: clip_frac (clipped branch
    strictly larger), clip_frac_high (rho > 1 + clip_high, A > 0), clip_frac_low
    (rho < 1 - clip_low, A < 0), clip_frac_dual (dual clip bounds the loss), approx_kl
    (mean of old_logprob - logprob, i.e. k1 of KL(old || new) under old's samples).
    """
    if clip_c is not None and clip_c <= 1.0:
        raise ValueError(f"clip_c (dual-clip constant) must be > 1 or None, got {clip_c}")
    log_ratio = (logprob - old_logprob).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)  # [B, T]
    ratio = log_ratio.exp()  # [B, T]
    loss_unclipped = -advantages * ratio  # [B, T]
    loss_clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # [B, T]
    loss = torch.maximum(loss_unclipped, loss_clipped)  # [B, T]
    if clip_c is not None:
        dual_bound = -advantages * clip_c  # [B, T]
        dual_active = (advantages < 0) & (loss > dual_bound)  # [B, T]
        loss = torch.where(advantages < 0, torch.minimum(loss, dual_bound), loss)
    else:
        dual_active = torch.zeros_like(loss, dtype=torch.bool)
    loss = torch.where(_weights(mask, loss) != 0, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))

    with torch.no_grad():
        r = ratio.detach()
        a = advantages.detach()
        metrics = {
            "clip_frac": masked_mean((loss_clipped > loss_unclipped).float(), mask),
            "clip_frac_high": masked_mean(((r > 1.0 + clip_high) & (a > 0)).float(), mask),
            "clip_frac_low": masked_mean(((r < 1.0 - clip_low) & (a < 0)).float(), mask),
            "clip_frac_dual": masked_mean(dual_active.float(), mask),
            "approx_kl": masked_mean((old_logprob - logprob).detach().float(), mask),
        }
    return loss, metrics


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_range: float | None = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss per token [B, T] (PPO): 0.5 * max((v - R)^2, (v_clip - R)^2).

    v_clip = clip(v, v_old - c, v_old + c) keeps the critic from moving far from the
    values the advantages were computed with. clip_range None: 0.5 * (v - R)^2.
    Returns the unaggregated loss (0 under mask 0) and {"vf_clip_frac"}: the fraction
    of tokens where the clipped term is the larger one (verl's vf_clipfrac).

    The clip is a clamp to the bounds, so v_clip is v itself, bit for bit, whenever v
    lies inside them. (v_old + clamp(v - v_old, +-c) rounds v - v_old and back, and
    counted ~10% of tokens of independent N(0, 1) batches as clipped with nothing to clip.)
    """
    loss_unclipped = (values - returns).square()  # [B, T]
    if clip_range is None:
        loss = loss_unclipped
        clipped_active = torch.zeros_like(loss, dtype=torch.bool)
    else:
        if clip_range < 0:
            raise ValueError(f"clip_range must be >= 0 or None, got {clip_range}")
        v_clipped = torch.clamp(values, old_values - clip_range, old_values + clip_range)  # [B, T]
        loss_clipped = (v_clipped - returns).square()  # [B, T]
        loss = torch.maximum(loss_unclipped, loss_clipped)
        clipped_active = loss_clipped > loss_unclipped
    loss = 0.5 * loss
    loss = torch.where(_weights(mask, loss) != 0, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
    with torch.no_grad():
        metrics = {"vf_clip_frac": masked_mean(clipped_active.float(), mask)}
    return loss, metrics


# --------------------------------------------------------------------------- logits


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim: [B, T, V] -> [B, T], in float32.

    H = logsumexp(z) - sum_v softmax(z)_v z_v on max-shifted logits, which never takes
    the log of a probability that underflowed to 0. Logits of -inf (filtered vocab)
    contribute 0.
    """
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    # Entropy is shift-invariant; subtracting the row max stops the two terms (each
    # ~max logit) from cancelling catastrophically when logits are large.
    z = z - z.amax(dim=-1, keepdim=True).detach()  # [B, T, V], max 0
    p = torch.softmax(z, dim=-1)  # [B, T, V]
    # p * z is 0 * -inf = NaN for filtered entries; their contribution is 0.
    pz = torch.where(p > 0, p * z, torch.zeros((), dtype=z.dtype, device=z.device))  # [B, T, V]
    return torch.logsumexp(z, dim=-1) - pz.sum(dim=-1)


# Rows of half-precision logits upcast at a time: bounds the float32 copy to
# _CHUNK_ROWS x V instead of the whole [B, T, V].
_CHUNK_ROWS = 1024


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[labels]: [B, T, V], [B, T] -> [B, T], computed in float32.

    Uses cross_entropy(reduction="none") (log_softmax + nll in one call, no
    materialised softmax or one-hot). bf16/fp16 logits are upcast in chunks of rows,
    so the float32 copy is at most _CHUNK_ROWS x V rather than [B, T, V]. A label of -100 (cross_entropy's
    ignore_index) gives 0; mask it out.
    """
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)  # [B*T, V]
    flat_labels = labels.reshape(-1).long()  # [B*T]
    if logits.dtype in (torch.float32, torch.float64):
        out = -F.cross_entropy(flat_logits, flat_labels, reduction="none")  # [B*T]
    else:
        chunks = [
            -F.cross_entropy(
                flat_logits[i : i + _CHUNK_ROWS].float(),
                flat_labels[i : i + _CHUNK_ROWS],
                reduction="none",
            )
            for i in range(0, flat_logits.shape[0], _CHUNK_ROWS)
        ]
        out = torch.cat(chunks) if chunks else flat_logits.new_zeros(0, dtype=torch.float32)
    return out.reshape(labels.shape)
