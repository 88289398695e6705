"""Tests for rlvr.losses: values computed by hand, invariances, loop references, and a
2-process (gloo) check that whitening and aggregation are global."""

from __future__ import annotations

import math
import os
from datetime import timedelta

import pytest
import torch
import torch.nn.functional as F

from rlvr.losses import (
    AGG_MODES,
    KL_ESTIMATORS,
    agg_loss,
    all_reduce_sum,
    clipped_pg_loss,
    entropy_from_logits,
    kl_penalty,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_var,
    value_loss,
    whiten,
)

NAN = float("nan")


def _close(actual: torch.Tensor, expected, atol: float = 1e-5) -> None:
    torch.testing.assert_close(
        actual.detach().double(), torch.as_tensor(expected, dtype=torch.float64), atol=atol, rtol=1e-5
    )


def _random_ragged(b: int, t: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random [b, t] float mask with left-aligned responses of lengths 0..t (one empty)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[b // 2] = 0  # an empty response: must not produce NaN anywhere
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()  # [b, t]
    return mask, g


# ----------------------------------------------------------------------------- masked ops

# Ragged batch used by several tests: lengths 3, 2, 1; padding holds 100 (or NaN) so a
# leak of padding into any result is visible.
LOSS = torch.tensor(
    [
        [1.0, 2.0, 3.0, 100.0],
        [4.0, 6.0, 100.0, 100.0],
        [5.0, 100.0, 100.0, 100.0],
    ]
)
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float32)


@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.bool])
def test_masked_sum_mean_var_by_hand(mask_dtype):
    mask = MASK.to(mask_dtype)
    x = LOSS.clone()
    x[MASK == 0] = NAN  # padding garbage must not leak (0 * NaN would)
    # tokens 1,2,3,4,6,5: sum 21, count 6, mean 3.5
    _close(masked_sum(x, mask), 21.0)
    _close(masked_mean(x, mask), 3.5)
    # per row: sums 6, 10, 5; means 2, 5, 5
    _close(masked_sum(x, mask, dim=-1), [6.0, 10.0, 5.0])
    _close(masked_mean(x, mask, dim=-1), [2.0, 5.0, 5.0])
    # deviations from 3.5: -2.5 -1.5 -0.5 0.5 2.5 1.5 -> squares 6.25+2.25+0.25+0.25+6.25+2.25 = 17.5
    _close(masked_var(x, mask), 17.5 / 5)  # Bessel: / (n - 1)
    _close(masked_var(x, mask, unbiased=False), 17.5 / 6)


def test_masked_mean_and_var_of_empty_are_zero_not_nan():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    _close(masked_mean(x, mask, dim=-1), [1.5, 0.0])  # row 2 has no tokens
    _close(masked_mean(x, torch.zeros_like(mask)), 0.0)
    _close(masked_var(x, torch.zeros_like(mask)), 0.0)
    # one token: the Bessel estimator is undefined (0/0); we return 0
    _close(masked_var(x, torch.tensor([[1.0, 0.0], [0.0, 0.0]])), 0.0)


def test_all_reduce_sum_single_process_is_identity_detached():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    y = all_reduce_sum(x)
    _close(y, [1.0, 2.0])
    assert not y.requires_grad
    _close(x, [1.0, 2.0])


# ----------------------------------------------------------------------------- agg_loss


@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.bool])
def test_agg_loss_modes_on_ragged_batch(mask_dtype):
    mask = MASK.to(mask_dtype)
    loss = LOSS.clone()
    loss[MASK == 0] = NAN
    # token-mean: (1+2+3+4+6+5) / 6 tokens = 21/6 = 3.5
    _close(agg_loss(loss, mask, "token-mean"), 3.5)
    # seq-mean-token-mean: row means 2, 5, 5 -> 12/3 = 4
    _close(agg_loss(loss, mask, "seq-mean-token-mean"), 4.0)
    # seq-mean-token-sum: row sums 6, 10, 5 -> 21/3 = 7
    _close(agg_loss(loss, mask, "seq-mean-token-sum"), 7.0)
    # Dr. GRPO: 21 / (3 seqs * 8) = 0.875 (8 = max response length, not the padded 4)
    _close(agg_loss(loss, mask, "seq-mean-token-sum-norm", norm_constant=8), 0.875)


def test_agg_loss_explicit_global_counts():
    # this call holds 6 of 12 tokens and 3 of 5 sequences of the minibatch
    _close(agg_loss(LOSS, MASK, "token-mean", global_tokens=12), 21 / 12)
    _close(agg_loss(LOSS, MASK, "token-mean", global_tokens=torch.tensor(12.0)), 21 / 12)
    _close(agg_loss(LOSS, MASK, "seq-mean-token-mean", global_seqs=5), 12 / 5)
    _close(agg_loss(LOSS, MASK, "seq-mean-token-sum", global_seqs=torch.tensor(5)), 21 / 5)
    _close(agg_loss(LOSS, MASK, "seq-mean-token-sum-norm", global_seqs=5, norm_constant=8), 21 / 40)


def test_agg_loss_empty_rows_and_batches():
    loss = torch.tensor([[2.0, 4.0], [7.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    # the empty row contributes 0 and still counts as a sequence (default global_seqs = B = 2)
    _close(agg_loss(loss, mask, "seq-mean-token-mean"), 3.0 / 2)
    _close(agg_loss(loss, mask, "token-mean"), 3.0)
    for mode in AGG_MODES:  # a micro-batch of only padding gives 0, not NaN
        _close(agg_loss(loss, torch.zeros_like(mask), mode, norm_constant=4), 0.0)


def test_agg_loss_norm_mode_requires_constant_and_unknown_mode_lists_modes():
    with pytest.raises(ValueError, match="norm_constant"):
        agg_loss(LOSS, MASK, "seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="seq-mean-token-sum-norm"):
        agg_loss(LOSS, MASK, "sum")


@pytest.mark.parametrize("mode", AGG_MODES)
def test_agg_loss_micro_batches_sum_to_whole_batch(mode):
    """1 x accumulation 3 == 3 x 1: with global counts, micro-batch results (and their
    gradients) sum to the whole-batch ones, however unevenly the batch is split."""
    b, t = 7, 6
    mask, g = _random_ragged(b, t, seed=0)
    base = torch.randn(b, t, generator=g)
    total_tokens, total_seqs = mask.sum(), b

    whole_param = base.clone().requires_grad_(True)
    whole = agg_loss(whole_param, mask, mode, norm_constant=t)
    whole.backward()

    part_param = base.clone().requires_grad_(True)
    parts = [(0, 1), (1, 4), (4, 7)]
    summed = 0.0
    for lo, hi in parts:
        piece = agg_loss(
            part_param[lo:hi],
            mask[lo:hi],
            mode,
            global_tokens=total_tokens,
            global_seqs=total_seqs,
            norm_constant=t,
        )
        piece.backward()  # gradient accumulation
        summed = summed + piece.detach()
    _close(summed, whole.detach().item())
    torch.testing.assert_close(part_param.grad, whole_param.grad)

    # Teeth: averaging micro-batches normalised locally is NOT the whole-batch loss.
    local = sum(agg_loss(base[lo:hi], mask[lo:hi], mode, norm_constant=t) for lo, hi in parts) / len(parts)
    assert not torch.isclose(local, whole.detach())


def _agg_loss_loop(loss, mask, mode, norm_constant):
    b, t = loss.shape
    rows = []
    for i in range(b):
        tokens = [loss[i][j].item() for j in range(t) if mask[i][j] > 0]
        rows.append(tokens)
    n_tokens = sum(len(r) for r in rows)
    if mode == "token-mean":
        return sum(sum(r) for r in rows) / n_tokens
    if mode == "seq-mean-token-mean":
        return sum(sum(r) / len(r) if r else 0.0 for r in rows) / b
    if mode == "seq-mean-token-sum":
        return sum(sum(r) for r in rows) / b
    return sum(sum(r) for r in rows) / (b * norm_constant)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("mode", AGG_MODES)
def test_agg_loss_matches_plain_loop(mode, seed):
    mask, g = _random_ragged(9, 11, seed)
    loss = torch.randn(9, 11, generator=g, dtype=torch.float64)
    _close(agg_loss(loss, mask, mode, norm_constant=16), _agg_loss_loop(loss, mask, mode, 16), atol=1e-10)


# ----------------------------------------------------------------------------- KL


def test_kl_estimators_by_hand():
    logprob = torch.tensor([0.0, -1.0, -1.0])
    ref = torch.tensor([-0.5, -0.5, -1.0])
    # delta = logprob - ref = [0.5, -0.5, 0]
    _close(kl_penalty(logprob, ref, "k1"), [0.5, -0.5, 0.0])
    _close(kl_penalty(logprob, ref, "k2"), [0.125, 0.125, 0.0])  # 0.5 * 0.25
    # k3 = e^-delta + delta - 1: e^-0.5 - 0.5 = 0.606531 - 0.5; e^0.5 - 1.5 = 1.648721 - 1.5
    _close(kl_penalty(logprob, ref, "k3"), [0.106531, 0.148721, 0.0])


@pytest.mark.parametrize(("alias", "name"), [("kl", "k1"), ("mse", "k2"), ("low_var_kl", "k3")])
def test_kl_aliases(alias, name):
    g = torch.Generator().manual_seed(0)
    lp, ref = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    torch.testing.assert_close(kl_penalty(lp, ref, alias), kl_penalty(lp, ref, name))


def test_k3_clamps_value_and_log_ratio():
    ref = torch.zeros(4)
    # delta = 2:    e^-2 + 2 - 1 = 0.135335 + 1 = 1.135335 (inside +-10)
    # delta = -3:   e^3 - 3 - 1 = 20.0855 - 4 = 16.0855 -> clamped to 10
    # delta = 30:   log-ratio -30 -> -20: e^-20 + 20 - 1 = 19.0 -> clamped to 10
    # delta = -1e3: log-ratio 1000 -> 20 (exp(1000) would be inf) -> clamped to 10
    logprob = torch.tensor([2.0, -3.0, 30.0, -1000.0], requires_grad=True)
    kl = kl_penalty(logprob, ref, "k3")
    _close(kl, [1.135335, 10.0, 10.0, 10.0])
    kl.sum().backward()
    # d/d delta (e^-delta + delta - 1) = 1 - e^-delta = 1 - 0.135335 at delta=2; 0 where clamped
    # (without the log-ratio clamp the last gradient would be inf * 0 = NaN)
    _close(logprob.grad, [0.864665, 0.0, 0.0, 0.0])


def test_kl_unknown_lists_estimators():
    with pytest.raises(ValueError) as err:
        kl_penalty(torch.zeros(1), torch.zeros(1), "k4")
    for name in (*KL_ESTIMATORS, "kl", "mse", "low_var_kl"):
        assert name in str(err.value)


# ----------------------------------------------------------------------------- clipped PG


def test_clipped_pg_loss_by_hand():
    # old log-prob -1 everywhere; log-ratios chosen per token; eps = 0.2, clip_c = 3.
    old = torch.full((2, 4), -1.0)
    log_ratio = torch.tensor([[0.1, 0.5, -0.5, -0.5], [0.5, 1.5, 3.0, 3.0]])
    adv = torch.tensor([[1.0, 1.0, 1.0, -1.0], [-1.0, -1.0, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    logprob = (old + log_ratio).requires_grad_(True)
    loss, m = clipped_pg_loss(logprob, old, adv, mask)
    expected = [
        # A=+1, ratio e^0.1 = 1.105171 in [0.8, 1.2]: unclipped, L = -1.105171
        # A=+1, ratio e^0.5 = 1.648721 > 1.2: clipped (high), L = max(-1.6487, -1.2) = -1.2
        # A=+1, ratio e^-0.5 = 0.606531 < 0.8: A > 0 so no clip, L = max(-0.6065, -0.8) = -0.606531
        # A=-1, ratio 0.606531 < 0.8: clipped (low), L = max(0.6065, 0.8) = 0.8
        [-1.105171, -1.2, -0.606531, 0.8],
        # A=-1, ratio 1.648721: L = max(1.6487, 1.2) = 1.648721 < 3, no dual clip
        # A=-1, ratio e^1.5 = 4.481689: L = max(4.4817, 1.2) = 4.4817 > 3 -> dual clip, L = 3
        # padding: 0
        [1.648721, 3.0, 0.0, 0.0],
    ]
    _close(loss, expected)
    # 6 tokens: clipped branch active on tokens (0,1) and (0,3); high (0,1); low (0,3); dual (1,1)
    _close(m["clip_frac"], 2 / 6)
    _close(m["clip_frac_high"], 1 / 6)
    _close(m["clip_frac_low"], 1 / 6)
    _close(m["clip_frac_dual"], 1 / 6)
    # approx_kl = mean(old - new) = -(0.1 + 0.5 - 0.5 - 0.5 + 0.5 + 1.5) / 6 = -1.6/6
    _close(m["approx_kl"], -1.6 / 6)
    assert all(v.dim() == 0 and not v.requires_grad for v in m.values())
    # gradient d(-A rho)/d logprob = -A rho on unclipped tokens, 0 on clipped/dual/padding
    loss.sum().backward()
    _close(logprob.grad, [[-1.105171, 0.0, -0.606531, 0.0], [1.648721, 0.0, 0.0, 0.0]])


def test_clipped_pg_loss_asymmetric_clip():
    # DAPO-style clip-higher: clip_low = 0.1 -> [0.9, ...], clip_high = 0.28 -> [..., 1.28]
    old = torch.zeros(1, 4)
    log_ratio = torch.tensor([[0.2, 0.3, -0.05, -0.25]])
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, m = clipped_pg_loss(old + log_ratio, old, adv, torch.ones(1, 4), clip_low=0.1, clip_high=0.28)
    # ratio e^0.2 = 1.221403 < 1.28 -> unclipped (would be clipped at 1.2 symmetric)
    # ratio e^0.3 = 1.349859 > 1.28 -> clipped, L = -1.28
    # ratio e^-0.05 = 0.951229 > 0.9 -> unclipped, L = 0.951229
    # ratio e^-0.25 = 0.778801 < 0.9 -> clipped, L = max(0.7788, 0.9) = 0.9
    _close(loss, [[-1.221403, -1.28, 0.951229, 0.9]])
    _close(m["clip_frac_high"], 1 / 4)
    _close(m["clip_frac_low"], 1 / 4)
    _close(m["clip_frac"], 2 / 4)


def test_clipped_pg_loss_dual_clip_options_and_log_ratio_clamp():
    old = torch.zeros(1, 3)
    log_ratio = torch.tensor([[1.5, 2.5, 100.0]])
    adv = torch.tensor([[-1.0, -1.0, -1.0]])
    mask = torch.ones(1, 3)
    # no dual clip: L = -A rho = e^1.5, e^2.5; log-ratio 100 clamped to 20 -> e^20 (not inf)
    loss, m = clipped_pg_loss(old + log_ratio, old, adv, mask, clip_c=None)
    _close(loss, [[4.481689, 12.182494, math.exp(20.0)]], atol=1e-1)
    assert torch.isfinite(loss).all()
    _close(m["clip_frac_dual"], 0.0)
    # DAPO's c = 10: e^1.5 = 4.48 stays, e^2.5 = 12.18 -> 10, e^20 -> 10
    loss, m = clipped_pg_loss(old + log_ratio, old, adv, mask, clip_c=10.0)
    _close(loss, [[4.481689, 10.0, 10.0]])
    _close(m["clip_frac_dual"], 2 / 3)
    for bad in (1.0, 0.5):
        with pytest.raises(ValueError, match="clip_c"):
            clipped_pg_loss(old, old, adv, mask, clip_c=bad)


def _pg_loop(logprob, old, adv, mask, clip_low, clip_high, clip_c):
    b, t = logprob.shape
    out = [[0.0] * t for _ in range(b)]
    counts = {"clip_frac": 0, "clip_frac_high": 0, "clip_frac_low": 0, "clip_frac_dual": 0}
    kl, n = 0.0, 0
    for i in range(b):
        for j in range(t):
            if mask[i][j] == 0:
                continue
            lr = min(max(logprob[i][j].item() - old[i][j].item(), -20.0), 20.0)
            r, a = math.exp(lr), adv[i][j].item()
            l1, l2 = -a * r, -a * min(max(r, 1 - clip_low), 1 + clip_high)
            val = max(l1, l2)
            counts["clip_frac"] += l2 > l1
            counts["clip_frac_high"] += r > 1 + clip_high and a > 0
            counts["clip_frac_low"] += r < 1 - clip_low and a < 0
            if a < 0 and val > -a * clip_c:
                val = -a * clip_c
                counts["clip_frac_dual"] += 1
            out[i][j] = val
            kl += old[i][j].item() - logprob[i][j].item()
            n += 1
    metrics = {k: v / n for k, v in counts.items()}
    metrics["approx_kl"] = kl / n
    return out, metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clipped_pg_loss_matches_plain_loop(seed):
    mask, g = _random_ragged(8, 10, seed)
    old = -torch.rand(8, 10, generator=g, dtype=torch.float64) * 3
    logprob = old + torch.randn(8, 10, generator=g, dtype=torch.float64) * 0.6
    adv = torch.randn(8, 10, generator=g, dtype=torch.float64)
    kwargs = dict(clip_low=0.2, clip_high=0.28, clip_c=2.0)
    loss, metrics = clipped_pg_loss(logprob, old, adv, mask, **kwargs)
    ref_loss, ref_metrics = _pg_loop(logprob, old, adv, mask, **kwargs)
    _close(loss, ref_loss, atol=1e-10)
    assert ref_metrics["clip_frac_dual"] > 0 and ref_metrics["clip_frac"] > 0  # cases exercised
    for key, value in ref_metrics.items():
        _close(metrics[key], value, atol=1e-6)


# ----------------------------------------------------------------------------- value loss


def test_value_loss_clipped_and_unclipped():
    values = torch.tensor([[1.0, 1.5, 1.5, 9.0]])
    old = torch.tensor([[0.9, 1.0, 1.0, 0.0]])
    returns = torch.tensor([[1.5, 2.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, m = value_loss(values, old, returns, mask, clip_range=0.2)
    # tok 1: v=1.0 within 0.9+-0.2: both terms (1.0-1.5)^2 = 0.25 -> 0.5*0.25 = 0.125
    # tok 2: v_clip = 1.0+0.2 = 1.2: (1.5-2)^2 = 0.25 vs (1.2-2)^2 = 0.64 -> 0.5*0.64 = 0.32 (clip active)
    # tok 3: v_clip = 1.2: (1.5-1)^2 = 0.25 vs (1.2-1)^2 = 0.04 -> 0.5*0.25 = 0.125
    # tok 4: padding -> 0
    _close(loss, [[0.125, 0.32, 0.125, 0.0]])
    _close(m["vf_clip_frac"], 1 / 3)
    loss, m = value_loss(values, old, returns, mask, clip_range=None)
    _close(loss, [[0.125, 0.125, 0.125, 0.0]])  # 0.5 * 0.25 each
    _close(m["vf_clip_frac"], 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_loss_rounding_is_not_clipping(seed):
    """Every new value lies inside v_old +- c, so nothing is clipped: the loss is exactly
    0.5 (v - R)^2 and vf_clip_frac is 0. Computing the clipped value as v_old + clamp(v - v_old)
    rounds (v - v_old) and back, and counted ~10% of these tokens as clipped (issue 8)."""
    g = torch.Generator().manual_seed(seed)
    values, old, returns = (torch.randn(64, 128, generator=g) for _ in range(3))  # independent N(0, 1)
    mask = torch.ones(64, 128)
    c = 10.0
    assert float((values - old).abs().max()) < c  # the premise: every token inside the clip range
    loss, m = value_loss(values, old, returns, mask, clip_range=c)
    assert float(m["vf_clip_frac"]) == 0.0
    assert torch.equal(loss, 0.5 * (values - returns).square())


def test_value_loss_at_the_clip_edges_by_hand():
    # v_old = 0.5, c = 0.25 (all exact in binary): the range is [0.25, 0.75]; returns 2 and -1
    old = torch.full((1, 6), 0.5)
    values = torch.tensor([[0.75, 1.0, 0.25, 0.0, 0.75, 1.0]])
    returns = torch.tensor([[2.0, 2.0, -1.0, -1.0, -1.0, -1.0]])
    loss, m = value_loss(values, old, returns, torch.ones(1, 6), clip_range=0.25)
    # tok 0: v on the upper edge: v_clip = v, both (0.75-2)^2 = 1.5625          -> .78125, not clipped
    # tok 1: v = 1 above: v_clip = .75; (1-2)^2 = 1 < 1.5625                     -> .78125, clipped
    # tok 2: v on the lower edge: both (0.25+1)^2 = 1.5625                       -> .78125, not clipped
    # tok 3: v = 0 below: v_clip = .25; (0+1)^2 = 1 < 1.5625                     -> .78125, clipped
    # tok 4: v = .75, R = -1: inside, both 3.0625                                -> 1.53125, not clipped
    # tok 5: v = 1 above, R = -1: v_clip = .75 is closer: (.75+1)^2 = 3.0625 < (1+1)^2 = 4 -> 2.0, not clipped
    _close(loss, [[0.78125, 0.78125, 0.78125, 0.78125, 1.53125, 2.0]])
    _close(m["vf_clip_frac"], 2 / 6)


# ----------------------------------------------------------------------------- whiten


def test_whiten_by_hand_bessel_biased_and_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, NAN], [4.0, 5.0, NAN, NAN]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    # tokens 1..5: mean 3, squared deviations 4+1+0+1+4 = 10
    # Bessel var = 10/4 = 2.5, std = 1.581139 ; biased var = 10/5 = 2, std = 1.414214
    out = whiten(x, mask)
    _close(out, [[-2 / 1.581139, -1 / 1.581139, 0.0, 0.0], [1 / 1.581139, 2 / 1.581139, 0.0, 0.0]])
    _close(masked_mean(out, mask), 0.0)
    _close(masked_var(out, mask), 1.0)
    out_b = whiten(x, mask, unbiased=False)
    _close(out_b, [[-2 / 1.414214, -1 / 1.414214, 0.0, 0.0], [1 / 1.414214, 2 / 1.414214, 0.0, 0.0]])
    _close(masked_var(out_b, mask, unbiased=False), 1.0)
    # shift_mean=False adds the mean (3) back: only the scale changes
    out_s = whiten(x, mask, shift_mean=False)
    _close(out_s, [[3 - 1.264911, 3 - 0.632456, 3.0, 0.0], [3 + 0.632456, 3 + 1.264911, 0.0, 0.0]])


def test_whiten_degenerate_inputs_are_finite():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # constant values: var 0 -> (x - mean) / sqrt(0 + eps) = 0
    _close(whiten(torch.tensor([[2.0, 2.0, 7.0]]), mask), [[0.0, 0.0, 0.0]])
    _close(whiten(torch.tensor([[2.0, 3.0, 7.0]]), torch.zeros_like(mask)), [[0.0, 0.0, 0.0]])


# ----------------------------------------------------------------------------- logits


def test_entropy_by_hand():
    # uniform over V=7 (any constant, even a huge one): H = log 7 = 1.945910
    _close(entropy_from_logits(torch.zeros(2, 3, 7)), torch.full((2, 3), math.log(7)))
    _close(entropy_from_logits(torch.full((1, 2, 7), 1e4)), torch.full((1, 2), math.log(7)))
    # p = [0.25, 0.75] from logits [0, ln 3]: H = 0.25 ln 4 + 0.75 ln(4/3) = 0.346574 + 0.215762
    _close(entropy_from_logits(torch.tensor([[[0.0, math.log(3.0)]]])), [[0.562335]])
    # filtered vocab (-inf) is a point mass here: H = 0, not NaN
    _close(entropy_from_logits(torch.tensor([[[0.0, -math.inf, -math.inf]]])), [[0.0]])
    bf = entropy_from_logits(torch.zeros(1, 1, 7, dtype=torch.bfloat16))
    assert bf.dtype == torch.float32
    _close(bf, [[math.log(7)]])


def test_logprobs_match_log_softmax_gather():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g) * 4
    labels = torch.randint(0, 11, (3, 5), generator=g)
    expected = torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logprobs_from_logits(logits, labels), expected)
    # p = [0.25, 0.75]: log 0.75 = -0.287682
    _close(logprobs_from_logits(torch.tensor([[[0.0, math.log(3.0)]]]), torch.tensor([[1]])), [[-0.287682]])


def test_logprobs_bf16_computed_in_float32_across_chunks():
    # 3 x 400 = 1200 rows: more than one upcast chunk
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(3, 400, 13, generator=g) * 3).to(torch.bfloat16)
    labels = torch.randint(0, 13, (3, 400), generator=g)
    out = logprobs_from_logits(logits, labels)
    assert out.dtype == torch.float32 and out.shape == (3, 400)
    expected = F.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(out, expected)
    # gradients flow back to the bf16 logits
    leaf = logits.clone().requires_grad_(True)
    logprobs_from_logits(leaf, labels).sum().backward()
    assert leaf.grad is not None and leaf.grad.dtype == torch.bfloat16


# ----------------------------------------------------------------------------- distributed


def _dist_worker(rank: int, world: int, init_file: str, out_dir: str, x, mask, loss) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    try:
        rows = slice(0, 2) if rank == 0 else slice(2, x.shape[0])  # uneven halves: 2 and 3 rows
        xl, ml, ll = x[rows], mask[rows], loss[rows]
        probe = torch.tensor([rank + 1.0, 10.0 * (rank + 1)], requires_grad=True)
        reduced = all_reduce_sum(probe)
        tokens = all_reduce_sum(ml.sum())
        seqs = all_reduce_sum(torch.tensor(float(ml.shape[0])))
        agg = {
            mode: all_reduce_sum(agg_loss(ll, ml, mode, global_tokens=tokens, global_seqs=seqs, norm_constant=6))
            for mode in AGG_MODES
        }
        result = {
            "whiten": whiten(xl, ml),
            "whiten_biased": whiten(xl, ml, unbiased=False),
            "whiten_noshift": whiten(xl, ml, shift_mean=False),
            "reduced": reduced,
            "reduced_requires_grad": reduced.requires_grad,
            "probe_after": probe.detach().clone(),
            "agg": agg,
        }
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_distributed_whiten_all_reduce_and_agg_loss_match_single_process(tmp_path):
    import torch.multiprocessing as mp

    mask, g = _random_ragged(5, 6, seed=7)
    x = torch.randn(5, 6, generator=g) * 3 + 1
    loss = torch.randn(5, 6, generator=g)
    mp.spawn(
        _dist_worker,
        args=(2, str(tmp_path / "init"), str(tmp_path), x, mask, loss),
        nprocs=2,
        join=True,
    )
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    halves = [slice(0, 2), slice(2, 5)]
    for kwargs, key in [
        ({}, "whiten"),
        ({"unbiased": False}, "whiten_biased"),
        ({"shift_mean": False}, "whiten_noshift"),
    ]:
        full = whiten(x, mask, **kwargs)
        for res, rows in zip(results, halves, strict=True):
            torch.testing.assert_close(res[key], full[rows])
    # teeth: whitening one half alone gives different numbers
    assert not torch.allclose(whiten(x[halves[1]], mask[halves[1]]), whiten(x, mask)[halves[1]])
    for rank, res in enumerate(results):
        _close(res["reduced"], [1.0 + 2.0, 10.0 + 20.0])
        assert res["reduced_requires_grad"] is False
        _close(res["probe_after"], [rank + 1.0, 10.0 * (rank + 1)])  # not modified in place
        for mode in AGG_MODES:
            _close(res["agg"][mode], agg_loss(loss, mask, mode, norm_constant=6).item())
