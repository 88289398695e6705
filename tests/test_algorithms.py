"""The six algorithms: advantage estimators checked against values worked out by hand
(torchtune style) and against plain-loop references (verl style), the shared loss
options, the registry, and two real training steps of each on a random model."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

import helpers
from helpers import make_random_model
from rlvr.algorithms import build_algorithm
from rlvr.batch import RolloutBatch
from rlvr.config import ConfigError
from rlvr.tasks import Problem

LN2 = math.log(2.0)
TASK = helpers.TASK


# ----------------------------------------------------------------------------- helpers


def algo(name: str, group_size: int | None = 3, max_new_tokens: int | None = 4, **options):
    return build_algorithm({"name": name, **options}, max_new_tokens=max_new_tokens, group_size=group_size)


EXTRAS = ("greedy_rewards", "values")  # algorithms' own per-sample data (ReMax, PPO): batch.extras


def make_batch(lengths, rewards, group, R=None, P=2, truncated=None, **fields) -> RolloutBatch:
    """A hand-made batch: response i has lengths[i] tokens (left-aligned), padding after;
    `greedy_rewards` and `values` go into batch.extras."""
    extras = {k: fields.pop(k) for k in EXTRAS if k in fields}
    B = len(lengths)
    R = R or max(lengths)
    mask = (torch.arange(R)[None, :] < torch.tensor(lengths)[:, None]).float()  # [B, R]
    ids = torch.full((B, P + R), 5, dtype=torch.long)
    att = torch.cat([torch.ones(B, P, dtype=torch.long), mask.long()], 1)
    return RolloutBatch(
        input_ids=ids,
        attention_mask=att,
        response_mask=mask,
        prompt_len=P,
        group=torch.tensor(group, dtype=torch.long),
        problems=[Problem(prompt=f"p{g}", answer="0") for g in group],
        completions=["x" * n for n in lengths],
        truncated=torch.tensor([n == R for n in lengths] if truncated is None else truncated),
        rewards=torch.tensor(rewards, dtype=torch.float32),
        extras=extras,
        **fields,
    )


def close(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    torch.testing.assert_close(
        actual.detach().double(), torch.as_tensor(expected, dtype=torch.float64), atol=atol, rtol=1e-6
    )


def padded(rows, R, pad=0.0) -> torch.Tensor:
    return torch.tensor([list(r) + [pad] * (R - len(r)) for r in rows], dtype=torch.float32)


def assert_whitened(adv: torch.Tensor, mask: torch.Tensor) -> None:
    """Mean 0 and Bessel variance 1 over the masked tokens; exactly 0 on padding."""
    x = adv[mask.bool()].double()
    assert abs(float(x.mean())) < 1e-6
    assert float(x.var(unbiased=True)) == pytest.approx(1.0, abs=1e-5)
    assert torch.all(adv[~mask.bool()] == 0)


# Two prompt groups of three, ragged lengths: group 0 rewards [1, 0, 0], group 1 [0.5, 1, 0].
LENGTHS = [3, 1, 2, 2, 3, 1]
REWARDS = [1.0, 0.0, 0.0, 0.5, 1.0, 0.0]
GROUP = [0, 0, 0, 1, 1, 1]


# ----------------------------------------------------------------------------- GRPO


def test_grpo_group_scale_bessel_std_and_eps_by_hand():
    # group 0: mean 1/3, deviations 2/3, -1/3, -1/3; sum of squares 4/9+1/9+1/9 = 2/3,
    #          Bessel var (2/3)/2 = 1/3, std = sqrt(1/3) = 0.5773503
    # group 1: mean 0.5, deviations 0, 0.5, -0.5; sum of squares 0.5, var 0.25, std 0.5
    s0 = math.sqrt(1 / 3)
    a = algo("grpo")
    assert a.config.std_eps == 1e-6  # verl's eps (ALGORITHMS.md)
    b = make_batch(LENGTHS, REWARDS, GROUP)
    a.compute_advantages(b)
    per_sample = [
        (2 / 3) / (s0 + 1e-6),
        (-1 / 3) / (s0 + 1e-6),
        (-1 / 3) / (s0 + 1e-6),
        0.0,
        0.5 / (0.5 + 1e-6),
        -0.5 / (0.5 + 1e-6),
    ]
    # per_sample ~ [1.1547, -0.5774, -0.5774, 0, 1.0, -1.0]
    close(b.advantages, padded([[v] * n for v, n in zip(per_sample, LENGTHS, strict=True)], 3))
    # a large eps shows it is added to the std, not the variance: group 1 -> 0.5 / (0.5 + 0.5) = 0.5
    b = make_batch(LENGTHS, REWARDS, GROUP)
    algo("grpo", std_eps=0.5).compute_advantages(b)
    close(b.advantages[4, :3], [0.5, 0.5, 0.5])
    close(b.advantages[0, :3], [(2 / 3) / (s0 + 0.5)] * 3)


def test_grpo_batch_scale_uses_std_over_whole_batch():
    # rewards 1, 0, 0, .5, 1, 0: mean 2.5/6 = 5/12; deviations (in twelfths) 7, -5, -5, 1, 7, -5
    # sum of squares (49+25+25+1+49+25)/144 = 174/144; Bessel var 174/144/5 = 29/120
    std_b = math.sqrt(29 / 120)  # 0.4915960
    b = make_batch(LENGTHS, REWARDS, GROUP)
    algo("grpo", scale="batch").compute_advantages(b)
    centred = [2 / 3, -1 / 3, -1 / 3, 0.0, 0.5, -0.5]  # still centred by the GROUP mean
    close(b.advantages[:, 0], [c / (std_b + 1e-6) for c in centred])


def test_grpo_scale_none_is_exactly_group_centred_reward():
    b = make_batch(LENGTHS, REWARDS, GROUP)
    algo("grpo", scale="none").compute_advantages(b)
    mean = torch.tensor([1 / 3] * 3 + [0.5] * 3)
    expected = (b.rewards - mean)[:, None] * b.response_mask
    torch.testing.assert_close(b.advantages, expected, rtol=0, atol=1e-7)


def test_grpo_group_of_one_gets_zero_advantage():
    # group 1 holds one response with reward 5: centred 0, std 0 -> 0 / eps = 0 (no NaN)
    b = make_batch([2, 2, 2], [1.0, 0.0, 5.0], [0, 0, 1])
    algo("grpo").compute_advantages(b)
    assert torch.all(b.advantages[2] == 0)
    assert torch.isfinite(b.advantages).all()
    # the pair: mean .5, Bessel std sqrt(0.5) = 0.7071; A = +-0.5 / 0.7071 = +-0.7071
    close(b.advantages[:2, 0], [0.5 / (math.sqrt(0.5) + 1e-6), -0.5 / (math.sqrt(0.5) + 1e-6)])


def test_grpo_advantage_broadcast_only_onto_masked_tokens():
    b = make_batch(LENGTHS, REWARDS, GROUP, R=4)  # one column of padding for everyone
    algo("grpo").compute_advantages(b)
    m = b.response_mask.bool()
    assert torch.all(b.advantages[~m] == 0)
    for i, n in enumerate(LENGTHS):
        row = b.advantages[i, :n]
        assert torch.all(row == row[0])  # one scalar per sample on all its tokens
    assert b.advantages[0, 0] != 0  # the test is not vacuous


# ----------------------------------------------------------------------------- RLOO


def rloo_loop(rewards: list[float], group: list[int]) -> list[float]:
    """A_i = R_i - mean of the other rewards of i's group, one sample at a time."""
    out = []
    for i, (r, g) in enumerate(zip(rewards, group, strict=True)):
        others = [rewards[j] for j in range(len(rewards)) if group[j] == g and j != i]
        out.append(r - sum(others) / len(others))
    return out


def test_rloo_equals_scaled_centred_reward_and_leave_one_out_loop():
    # group 0 (G=3): 3/2 * (1 - 1/3) = 1 = 1 - mean(0, 0); 3/2 * (0 - 1/3) = -0.5 = 0 - mean(1, 0)
    # group 1 (G=3): 3/2 * (0.5 - 0.5) = 0;  3/2 * 0.5 = 0.75 = 1 - mean(.5, 0); -0.75
    b = make_batch(LENGTHS, REWARDS, GROUP)
    algo("rloo").compute_advantages(b)
    close(b.advantages[:, 0], [1.0, -0.5, -0.5, 0.0, 0.75, -0.75])
    # unequal group sizes (4 and 2) with awkward rewards, against the explicit loop
    rewards, group = [0.3, 1.7, -0.2, 0.9, 2.0, -1.0], [0, 0, 0, 0, 1, 1]
    b = make_batch([1, 2, 3, 1, 2, 3], rewards, group)
    algo("rloo").compute_advantages(b)
    close(b.advantages[:, 0], rloo_loop(rewards, group), atol=1e-6)
    assert torch.all(b.advantages[b.response_mask == 0] == 0)
    # G/(G-1) factor: group 0 has G=4 -> 4/3 * (R - mean); mean = 2.7/4 = 0.675
    close(b.advantages[0, 0], 4 / 3 * (0.3 - 0.675))


def test_rloo_group_size_one_is_a_config_error_naming_rollout_n():
    with pytest.raises(ConfigError, match=r"rollout\.n"):
        algo("rloo", group_size=1)
    algo("rloo", group_size=2)  # the smallest valid group


def test_rloo_batch_with_a_group_of_one_raises():
    b = make_batch([2, 2, 2], [1.0, 0.0, 5.0], [0, 0, 1])
    with pytest.raises(ValueError, match="single response"):
        algo("rloo").compute_advantages(b)


# ----------------------------------------------------------------------------- REINFORCE++


def rpp_kl_batch() -> RolloutBatch:
    """Three responses of lengths 3, 1, 2; k1 = old - ref chosen per token, junk (9.0) on padding."""
    ref = torch.zeros(3, 3)
    old = padded([[0.2, -0.4, 0.6], [1.0], [0.0, 0.2]], 3, pad=9.0)  # old - ref = these
    return make_batch([3, 1, 2], [1.0, 0.0, 2.0], [0, 1, 2], old_logprobs=old, ref_logprobs=ref)


def test_reinforce_pp_return_to_go_with_kl_in_reward_by_hand():
    a = algo("reinforce_pp", kl_coef=0.5)
    assert (a.config.kl_in, a.config.kl_estimator) == ("reward", "k1")
    b = rpp_kl_batch()
    a.compute_advantages(b)
    # r_t = -0.5 * (old - ref), + R on the last token:
    # row 0: [-0.1, 0.2, -0.3 + 1] = [-0.1, 0.2, 0.7]  -> G = [0.8, 0.9, 0.7]
    # row 1: [-0.5 + 0]                                -> G = [-0.5]
    # row 2: [0, -0.1 + 2] = [0, 1.9]                  -> G = [1.9, 1.9]
    close(b.returns, [[0.8, 0.9, 0.7], [-0.5, 0, 0], [1.9, 1.9, 0]])
    # whitening over the 6 tokens: mean 5.7/6 = 0.95; deviations -.15 -.05 -.25 -1.45 .95 .95
    # squares .0225+.0025+.0625+2.1025+.9025+.9025 = 3.995; Bessel var 3.995/5 = 0.799
    s = math.sqrt(0.799 + 1e-8)
    close(b.advantages, [[-0.15 / s, -0.05 / s, -0.25 / s], [-1.45 / s, 0, 0], [0.95 / s, 0.95 / s, 0]])
    assert_whitened(b.advantages, b.response_mask)


def returns_loop(r: torch.Tensor, lengths: list[int], gamma: float) -> list[list[float]]:
    out = []
    for i, n in enumerate(lengths):
        row = [0.0] * r.shape[1]
        for t in range(n):
            row[t] = sum(gamma ** (s - t) * float(r[i, s]) for s in range(t, n))
        out.append(row)
    return out


def test_reinforce_pp_discounted_returns_vs_plain_loop():
    b = rpp_kl_batch()
    a = algo("reinforce_pp", kl_coef=0.5, gamma=0.5)
    a.compute_advantages(b)
    # by hand, row 0 with gamma .5: G2 = .7, G1 = .2 + .5*.7 = .55, G0 = -.1 + .5*.55 = .175
    close(b.returns[0], [0.175, 0.55, 0.7])
    for gamma in (0.5, 0.9):
        b = rpp_kl_batch()
        a = algo("reinforce_pp", kl_coef=0.5, gamma=gamma)
        r = a.token_rewards(rpp_kl_batch())  # the same token rewards, computed separately
        a.compute_advantages(b)
        close(b.returns, returns_loop(r, [3, 1, 2], gamma))
        assert_whitened(b.advantages, b.response_mask)


def test_reinforce_pp_without_kl_has_outcome_only_returns():
    b = rpp_kl_batch()
    algo("reinforce_pp").compute_advantages(b)  # kl_coef 0 by default (Yue et al.)
    close(b.returns, [[1, 1, 1], [0, 0, 0], [2, 2, 0]])


def test_reinforce_pp_baseline_is_whitened_group_centred_reward():
    b = make_batch(LENGTHS, REWARDS, GROUP)
    algo("reinforce_pp", baseline=True).compute_advantages(b)
    assert_whitened(b.advantages, b.response_mask)
    # centred: [2/3, -1/3, -1/3, 0, .5, -.5] broadcast over lengths [3, 1, 2, 2, 3, 1]:
    tokens = [2 / 3] * 3 + [-1 / 3] + [-1 / 3] * 2 + [0.0] * 2 + [0.5] * 3 + [-0.5]
    mean = sum(tokens) / len(tokens)  # (2 - 1/3 - 2/3 + 1.5 - .5) / 12 = 2/12
    var = sum((x - mean) ** 2 for x in tokens) / (len(tokens) - 1)
    centred = [2 / 3, -1 / 3, -1 / 3, 0.0, 0.5, -0.5]
    expected = [[(c - mean) / math.sqrt(var + 1e-8)] * n for c, n in zip(centred, LENGTHS, strict=True)]
    close(b.advantages, padded(expected, 3), atol=1e-5)


# ----------------------------------------------------------------------------- ReMax


def test_remax_advantage_is_reward_minus_greedy_reward_not_whitened():
    b = make_batch(
        [3, 1, 2, 2], [1.0, 0.0, 0.5, 2.0], [0, 0, 1, 1], greedy_rewards=torch.tensor([0.25, 0.25, 1.0, 1.0])
    )
    algo("remax").compute_advantages(b)
    # A = R - b on every token: 1 - .25 = .75; 0 - .25 = -.25; .5 - 1 = -.5; 2 - 1 = 1
    close(b.advantages, [[0.75] * 3, [-0.25, 0, 0], [-0.5, -0.5, 0], [1.0, 1.0, 0]])


def test_remax_without_greedy_rewards_raises():
    b = make_batch([3, 1], [1.0, 0.0], [0, 0])
    with pytest.raises(ValueError, match="greedy"):
        algo("remax").compute_advantages(b)


# ----------------------------------------------------------------------------- PPO


def ppo_batch(junk: float = 0.0) -> RolloutBatch:
    """Two responses, lengths 3 and 2, rewards 1 and -1; V = [.5 .2 .4], [.3 .6 junk]."""
    values = torch.tensor([[0.5, 0.2, 0.4], [0.3, 0.6, junk]])
    return make_batch([3, 2], [1.0, -1.0], [0, 1], values=values)


def gae_loop(r, v, lengths, gamma, lam) -> list[list[float]]:
    """A_t = sum_l (gamma lam)^l delta_{t+l}, delta_t = r_t + gamma V_{t+1} - V_t (V past the end 0)."""
    out = []
    for i, n in enumerate(lengths):
        V = [float(v[i, t]) for t in range(n)] + [0.0]
        delta = [float(r[i, t]) + gamma * V[t + 1] - V[t] for t in range(n)]
        row = [0.0] * r.shape[1]
        for t in range(n):
            row[t] = sum((gamma * lam) ** (s - t) * delta[s] for s in range(t, n))
        out.append(row)
    return out


def test_ppo_gae_gamma_lambda_one_by_hand():
    b = ppo_batch()
    a = algo("ppo")
    assert (a.config.gamma, a.config.lam) == (1.0, 1.0)
    a.compute_advantages(b)
    # gamma = lambda = 1: A_t = (sum of future rewards) - V_t
    # row 0: 1 - [.5, .2, .4] = [.5, .8, .6]; row 1: -1 - [.3, .6] = [-1.3, -1.6]
    # returns = A + V = 1 and -1 on every response token
    close(b.returns, [[1, 1, 1], [-1, -1, 0]])
    raw = [0.5, 0.8, 0.6, -1.3, -1.6]
    mean = sum(raw) / 5  # -1.0 / 5 = -0.2
    std = math.sqrt(sum((x - mean) ** 2 for x in raw) / 4 + 1e-8)
    close(b.advantages, [[(x - mean) / std for x in raw[:3]], [(x - mean) / std for x in raw[3:]] + [0]])
    assert_whitened(b.advantages, b.response_mask)


def test_ppo_gae_discounted_by_hand_and_vs_loop():
    b = ppo_batch()
    a = algo("ppo", gamma=0.9, lam=0.8)
    a.compute_advantages(b)
    # row 0: d2 = 1 - .4 = .6                A2 = .6
    #        d1 = .9*.4 - .2 = .16           A1 = .16 + .72*.6 = .592
    #        d0 = .9*.2 - .5 = -.32          A0 = -.32 + .72*.592 = .10624
    # row 1: d1 = -1 - .6 = -1.6             A1 = -1.6
    #        d0 = .9*.6 - .3 = .24           A0 = .24 + .72*(-1.6) = -.912
    adv = [[0.10624, 0.592, 0.6], [-0.912, -1.6, 0.0]]
    v = [[0.5, 0.2, 0.4], [0.3, 0.6, 0.0]]
    close(
        b.returns, [[x + y for x, y in zip(ra, rv, strict=True)] for ra, rv in zip(adv, v, strict=True)]
    )  # returns = A + V, unwhitened
    r = a.token_rewards(ppo_batch())
    close(b.returns - b.extras["values"] * b.response_mask, gae_loop(r, b.extras["values"], [3, 2], 0.9, 0.8))
    assert_whitened(b.advantages, b.response_mask)


def test_ppo_gae_loop_reference_on_random_ragged_batch():
    g = torch.Generator().manual_seed(0)
    lengths = [5, 1, 3, 4, 2]
    b = make_batch(
        lengths,
        torch.randn(5, generator=g).tolist(),
        [0, 1, 2, 3, 4],
        R=6,
        values=torch.randn(5, 6, generator=g),
        old_logprobs=torch.randn(5, 6, generator=g),
        ref_logprobs=torch.randn(5, 6, generator=g),
    )
    a = algo("ppo", gamma=0.95, lam=0.7, kl_coef=0.1)  # KL (k1) in the token rewards too
    r = a.token_rewards(b)
    v = b.extras["values"].clone()
    a.compute_advantages(b)
    close(b.returns - v * b.response_mask, gae_loop(r, v, lengths, 0.95, 0.7), atol=1e-5)


@pytest.mark.parametrize("junk", [1e6, -3e4])
def test_ppo_values_on_padding_do_not_leak(junk):
    clean, dirty = ppo_batch(0.0), ppo_batch(junk)
    for gamma, lam in ((1.0, 1.0), (0.9, 0.8)):
        a = algo("ppo", gamma=gamma, lam=lam)
        a.compute_advantages(clean)
        a.compute_advantages(dirty)
        torch.testing.assert_close(dirty.advantages, clean.advantages, rtol=0, atol=0)
        torch.testing.assert_close(dirty.returns, clean.returns, rtol=0, atol=0)


def test_ppo_nonfinite_values_on_padding_do_not_leak():
    clean, dirty = ppo_batch(0.0), ppo_batch(float("inf"))
    a = algo("ppo")
    a.compute_advantages(clean)
    a.compute_advantages(dirty)
    torch.testing.assert_close(dirty.advantages, clean.advantages)


def test_nonfinite_logprobs_on_padding_do_not_leak_into_kl_reward():
    clean, dirty = rpp_kl_batch(), rpp_kl_batch()
    dirty.old_logprobs[1, 1:] = float("nan")  # row 1 has one real token; the rest is padding
    a = algo("reinforce_pp", kl_coef=0.5)
    a.compute_advantages(clean)
    a.compute_advantages(dirty)
    torch.testing.assert_close(dirty.advantages, clean.advantages)


def test_ppo_compute_loss_includes_clipped_value_loss_by_hand():
    # one response of 2 tokens; new log-probs == old, so ratio 1 and the policy loss is -A per token
    def batch():
        return make_batch(
            [2],
            [0.0],
            [0],
            old_logprobs=torch.tensor([[-1.0, -2.0]]),
            advantages=torch.tensor([[0.4, -0.2]]),
            values=torch.tensor([[0.5, 0.5]]),
            returns=torch.tensor([[2.0, 0.2]]),
        )

    logprobs = torch.tensor([[-1.0, -2.0]])
    v_new = torch.tensor([[1.5, -0.5]])
    # pg: token-mean of [-.4, .2] = -0.1
    # value: clip(v, .5 +- .5) = [1.0, 0.0]
    #   unclipped (1.5-2)^2 = .25, (-.5-.2)^2 = .49; clipped (1-2)^2 = 1, (0-.2)^2 = .04
    #   0.5 * max = [.5, .245]; token-mean .3725; vf_coef .5 -> .18625
    a = algo("ppo", vf_coef=0.5, value_clip=0.5)
    assert a.config.loss_agg == "token-mean"
    loss, m = a.compute_loss(batch(), logprobs, values=v_new)
    assert float(loss) == pytest.approx(-0.1 + 0.18625, abs=1e-6)
    assert float(m["value_loss"]) == pytest.approx(0.3725, abs=1e-6)
    assert float(m["pg_loss"]) == pytest.approx(-0.1, abs=1e-6)
    # no value clip: 0.5 * [.25, .49] -> token-mean .185; vf_coef 2 -> .37
    loss, _ = algo("ppo", vf_coef=2.0, value_clip=None).compute_loss(batch(), logprobs, values=v_new)
    assert float(loss) == pytest.approx(-0.1 + 0.37, abs=1e-6)


def test_ppo_value_clip_fraction_counts_only_real_clipping():
    # every new value within v_old +- 10 of independent N(0, 1) values: nothing is clipped, so the
    # value loss is the plain 0.5 (v - R)^2 and the logged fraction is 0 (issue 8: it read ~10%)
    g = torch.Generator().manual_seed(3)
    B, R = 32, 16
    values, old, returns = (torch.randn(B, R, generator=g) for _ in range(3))
    b = make_batch(
        [R] * B,
        [0.0] * B,
        list(range(B)),
        old_logprobs=torch.zeros(B, R),
        advantages=torch.zeros(B, R),
        values=old,
        returns=returns,
    )
    loss, m = algo("ppo", value_clip=10.0).compute_loss(b, torch.zeros(B, R), values=values)
    assert float(m["vf_clip_frac"]) == 0.0
    assert float(m["value_loss"]) == pytest.approx(float(0.5 * (values - returns).square().mean()), rel=1e-6)


# ----------------------------------------------------------------------------- DAPO


def test_dapo_defaults():
    a = algo("dapo")
    c = a.config
    assert (c.clip_low, c.clip_high, c.clip_c) == (0.2, 0.28, 10.0)
    assert c.loss_agg == "token-mean"
    assert c.kl_coef == 0 and not a.needs_reference
    assert c.dynamic_sampling and c.filter_on == "score" and a.max_gen_batches == c.max_gen_batches == 10


def test_dapo_clip_constants_reach_the_loss():
    # token 0: A = 1,  ratio 1.5 -> max(-1.5, -1.28) = -1.28   (clip-higher at 1 + 0.28)
    # token 1: A = -1, ratio 20  -> max(20, 1.28) = 20 -> dual clip min(20, 10 * 1) = 10
    # token-mean over 2 tokens: (-1.28 + 10) / 2 = 4.36
    b = make_batch([2], [0.0], [0], old_logprobs=torch.zeros(1, 2), advantages=torch.tensor([[1.0, -1.0]]))
    loss, _ = algo("dapo").compute_loss(b, torch.tensor([[math.log(1.5), math.log(20.0)]]))
    assert float(loss) == pytest.approx(4.36, abs=1e-5)


def test_dapo_keep_group_filters_equal_groups():
    a = algo("dapo")
    t = torch.tensor
    assert not a.keep_group(t([1.0, 1.0, 1.0]), t([1.0, 1.0, 1.0]))
    assert not a.keep_group(t([0.0, 0.0, 0.0]), t([0.0, 0.0, 0.0]))
    assert a.keep_group(t([1.0, 0.0, 1.0]), t([1.0, 0.0, 1.0]))
    # scores all 1, shaped rewards differ (overlong penalty): dropped under score, kept under reward
    shaped, scores = t([1.0, 0.75, 0.5]), t([1.0, 1.0, 1.0])
    assert not a.keep_group(shaped, scores)
    assert algo("dapo", filter_on="reward").keep_group(shaped, scores)
    # and the reverse: equal rewards but different scores
    assert algo("dapo").keep_group(t([0.5, 0.5]), t([1.0, 0.0]))
    assert not algo("dapo", filter_on="reward").keep_group(t([0.5, 0.5]), t([1.0, 0.0]))


def test_dapo_without_dynamic_sampling_keeps_all():
    a = algo("dapo", dynamic_sampling=False)
    assert a.keep_group(torch.ones(4), torch.ones(4))
    assert a.max_gen_batches == 1
    assert algo("grpo").keep_group(torch.ones(4), torch.ones(4))  # and the base class keeps all


# ----------------------------------------------------------------------------- shared options


def loss_batch() -> RolloutBatch:
    # two responses, lengths 2 and 1; old == current log-probs so ratio 1 and pg = -A per token
    return make_batch(
        [2, 1],
        [0.0, 0.0],
        [0, 1],
        old_logprobs=padded([[-1.0, -2.0], [-0.5]], 2),
        advantages=padded([[1.0, 1.0], [-2.0]], 2),
        ref_logprobs=padded([[-1.0 - LN2, -2.0], [-0.5 + LN2]], 2, pad=50.0),
    )


def test_kl_as_loss_term_adds_kl_coef_times_agg_k3():
    logprobs = padded([[-1.0, -2.0], [-0.5]], 2, pad=-7.0)
    # delta = l - ref: row 0 [ln 2, 0], row 1 [-ln 2]
    # k3 = exp(-delta) + delta - 1: ln2 -> .5 + .693147 - 1 = .193147; 0 -> 0; -ln2 -> 2 - .693147 - 1 = .306853
    # seq-mean-token-mean (GRPO default): ((.193147 + 0)/2 + .306853) / 2 = .2017132
    k3 = [0.5 + LN2 - 1, 0.0, 2 - LN2 - 1]
    agg_k3 = ((k3[0] + k3[1]) / 2 + k3[2]) / 2
    # pg: per-seq means of -A: -1 and 2 -> 0.5
    base, _ = algo("grpo").compute_loss(loss_batch(), logprobs)
    with_kl, m = algo("grpo", kl_coef=0.1).compute_loss(loss_batch(), logprobs)
    assert float(base) == pytest.approx(0.5, abs=1e-6)
    assert float(with_kl - base) == pytest.approx(0.1 * agg_k3, abs=1e-6)  # 0.02017132
    assert float(with_kl) == pytest.approx(0.5 + 0.1 * agg_k3, abs=1e-6)
    assert float(m["kl"]) == pytest.approx(sum(k3) / 3, abs=1e-6)  # token mean of k3
    # kl_in=reward puts nothing in the loss
    in_reward, _ = algo("grpo", kl_coef=0.1, kl_in="reward").compute_loss(loss_batch(), logprobs)
    assert float(in_reward) == pytest.approx(0.5, abs=1e-6)


def test_kl_estimators_k1_k2_in_loss():
    logprobs = padded([[-1.0, -2.0], [-0.5]], 2)
    base, _ = algo("grpo").compute_loss(loss_batch(), logprobs)
    # k1 = delta: ((ln2 + 0)/2 + -ln2)/2 = -ln2/4; k2 = delta^2/2: ((ln2^2/2)/2 + ln2^2/2)/2 = 3 ln2^2 / 8
    k1, _ = algo("grpo", kl_coef=1.0, kl_estimator="k1").compute_loss(loss_batch(), logprobs)
    k2, _ = algo("grpo", kl_coef=1.0, kl_estimator="k2").compute_loss(loss_batch(), logprobs)
    assert float(k1 - base) == pytest.approx(-LN2 / 4, abs=1e-6)
    assert float(k2 - base) == pytest.approx(3 * LN2**2 / 8, abs=1e-6)


def kl_reward_batch() -> RolloutBatch:
    # k1 = old - ref = 0.5 on every token; lengths 2 and 1 -> per-sequence KL 1.0 and 0.5, mean 0.75
    return make_batch([2, 1], [1.0, 0.0], [0, 1], old_logprobs=torch.full((2, 2), 0.5), ref_logprobs=torch.zeros(2, 2))


@pytest.mark.parametrize(
    "target,err",
    [
        (0.5, 0.2),  # 0.75/0.5 - 1 = 0.5, clipped to 0.2   -> coef grows
        (0.7, 0.75 / 0.7 - 1),  # 0.0714, inside the clip     -> grows
        (0.8, -0.0625),  # 0.75/0.8 - 1 = -0.0625                -> shrinks
        (1.5, -0.2),  # 0.75/1.5 - 1 = -0.5, clipped to -0.2  -> shrinks
    ],
)
def test_adaptive_kl_controller_ziegler(target, err):
    a = algo("reinforce_pp", kl_coef=0.1, kl_target=target, kl_horizon=10)
    b = kl_reward_batch()
    r = a.token_rewards(b)
    # this step's rewards use the coefficient before the update: -0.1 * 0.5 = -0.05 per token
    close(r, [[-0.05, 1 - 0.05], [-0.05, 0.0]])
    assert b.metrics["kl"] == pytest.approx(0.75)
    # Ziegler et al.: beta *= 1 + clip(KL/target - 1, +-0.2) * n_samples / horizon, n = 2, horizon 10
    assert a.kl_coef == pytest.approx(0.1 * (1 + err * 2 / 10), rel=1e-9)
    assert (a.kl_coef > 0.1) == (0.75 > target)
    assert a.config.kl_coef == 0.1  # the config keeps the initial value
    # a second batch compounds the update
    a.token_rewards(kl_reward_batch())
    assert a.kl_coef == pytest.approx(0.1 * (1 + err * 2 / 10) ** 2, rel=1e-9)


def test_fixed_kl_coef_without_target_does_not_move():
    a = algo("reinforce_pp", kl_coef=0.1)
    a.token_rewards(kl_reward_batch())
    assert a.kl_coef == 0.1


def test_kl_target_says_which_kl_it_controls():
    """The controller compares kl_target with the mean over sequences of each sequence's KL sum
    (Ziegler et al.), not verl's mean of per-token means: the option and the docstring say so."""
    from rlvr.algorithms import Algorithm, AlgorithmConfig

    desc = AlgorithmConfig.model_fields["kl_target"].description
    assert "per-sequence" in desc and "sum" in desc and "verl" in desc
    assert "per-sequence KL sum" in Algorithm.token_rewards.__doc__
    # kl_reward_batch: sums 1.0 and 0.5 -> 0.75; verl's mean of per-token means would be 0.5
    a = algo("grpo", kl_coef=0.1, kl_in="reward", kl_estimator="k1", kl_target=0.75, kl_horizon=10)
    b = kl_reward_batch()
    a.compute_advantages(b)
    assert b.metrics["kl"] == pytest.approx(0.75) and a.kl_coef == pytest.approx(0.1)  # on target: unmoved


# --- KL in the reward reaches every estimator's advantage (issue 8)
#
# Two groups of two, lengths 2, 1, 3, 2; outcomes 1, 0 | 1, 1 (group 1 has no spread without KL).
# k1 = old - ref per token, junk on padding; beta = 0.5:
#   row 0 [.2, .4] sum .6 | row 1 [1.0] sum 1.0 | row 2 [.1, .1, .2] sum .4 | row 3 [.5, .3] sum .8
# The sequence reward R' = R - beta * sum_t k1_t: .7, -.5 | .8, .6
KL_LENGTHS, KL_GROUP, KL_R = [2, 1, 3, 2], [0, 0, 1, 1], [1.0, 0.0, 1.0, 1.0]
KL_K1 = [[0.2, 0.4], [1.0], [0.1, 0.1, 0.2], [0.5, 0.3]]
R_KL = [0.7, -0.5, 0.8, 0.6]


def kl_adv_batch(**fields) -> RolloutBatch:
    old = padded(KL_K1, 3, pad=float("nan"))
    return make_batch(KL_LENGTHS, KL_R, KL_GROUP, old_logprobs=old, ref_logprobs=torch.zeros(4, 3), **fields)


def whiten_loop(rows: list[list[float]]) -> list[list[float]]:
    """(x - mean) / sqrt(Bessel var + 1e-8) over all tokens of ragged rows, padded to 3 with 0."""
    flat = [x for r in rows for x in r]
    mean = sum(flat) / len(flat)
    sd = math.sqrt(sum((x - mean) ** 2 for x in flat) / (len(flat) - 1) + 1e-8)
    return [[(x - mean) / sd for x in r] + [0.0] * (3 - len(r)) for r in rows]


def broadcast(per_seq: list[float]) -> list[list[float]]:
    return [[v] * n for v, n in zip(per_seq, KL_LENGTHS, strict=True)]


s0, s1 = 1.2 / math.sqrt(2), 0.2 / math.sqrt(2)  # Bessel std of (.7, -.5) and (.8, .6)
KL_CASES = {
    # Dr. GRPO: R' - mean_g R' = .6, -.6 | .1, -.1; without KL .5, -.5 | 0, 0: the change is exactly
    # -beta * (sum k1 - its group mean) = +.1, -.1 | +.1, -.1
    "grpo_none": ({"name": "grpo", "scale": "none"}, broadcast([0.6, -0.6, 0.1, -0.1]), None),
    "grpo": (
        {"name": "grpo"},
        broadcast([0.6 / (s0 + 1e-6), -0.6 / (s0 + 1e-6), 0.1 / (s1 + 1e-6), -0.1 / (s1 + 1e-6)]),
        None,
    ),
    "dapo": (
        {"name": "dapo"},
        broadcast([0.6 / (s0 + 1e-6), -0.6 / (s0 + 1e-6), 0.1 / (s1 + 1e-6), -0.1 / (s1 + 1e-6)]),
        None,
    ),
    # leave-one-out: R'_i - R'_other = 1.2, -1.2 | .2, -.2
    "rloo": ({"name": "rloo"}, broadcast([1.2, -1.2, 0.2, -0.2]), None),
    # group-centred R' broadcast, then whitened over the 8 tokens
    "reinforce_pp_baseline": (
        {"name": "reinforce_pp", "baseline": True},
        whiten_loop(broadcast([0.6, -0.6, 0.1, -0.1])),
        broadcast([0.6, -0.6, 0.1, -0.1]),
    ),
    # token rewards -beta*k1 (+R on the last token), return-to-go, whitened:
    #   row 0 [-.1, -.2+1] -> G [.7, .8]; row 1 [-.5+0] -> [-.5]; row 2 [-.05, -.05, -.1+1] -> [.8, .85, .9]
    #   row 3 [-.25, -.15+1] -> [.6, .85]
    "reinforce_pp": (
        {"name": "reinforce_pp"},
        whiten_loop([[0.7, 0.8], [-0.5], [0.8, 0.85, 0.9], [0.6, 0.85]]),
        [[0.7, 0.8], [-0.5], [0.8, 0.85, 0.9], [0.6, 0.85]],
    ),
    # the same returns minus the greedy reward (.5 for group 0, 1 for group 1), not whitened
    "remax": ({"name": "remax"}, [[0.2, 0.3], [-1.0], [-0.2, -0.15, -0.1], [-0.4, -0.15]], None),
    # V = 0: GAE(1, 1) is the return-to-go; returns = A + V = the same; A whitened
    "ppo": (
        {"name": "ppo"},
        whiten_loop([[0.7, 0.8], [-0.5], [0.8, 0.85, 0.9], [0.6, 0.85]]),
        [[0.7, 0.8], [-0.5], [0.8, 0.85, 0.9], [0.6, 0.85]],
    ),
}


@pytest.mark.parametrize("case", list(KL_CASES))
def test_kl_in_reward_reaches_the_advantage_by_hand(case):
    options, expected_adv, expected_returns = KL_CASES[case]
    a = algo(**options, group_size=2, kl_coef=0.5, kl_in="reward", kl_estimator="k1")
    assert a.needs_reference
    b = kl_adv_batch(greedy_rewards=torch.tensor([0.5, 0.5, 1.0, 1.0]), values=torch.zeros(4, 3))
    a.compute_advantages(b)
    close(b.advantages, padded(expected_adv, 3), atol=1e-5)
    if expected_returns is not None:
        close(b.returns, padded(expected_returns, 3), atol=1e-6)
    # the KL was measured (mean per-sequence sum: (.6 + 1 + .4 + .8) / 4 = .7) and logged
    assert b.metrics["kl"] == pytest.approx(0.7) and b.metrics["kl_coef"] == 0.5
    # and it made a difference: without it the advantages differ
    b0 = kl_adv_batch(greedy_rewards=torch.tensor([0.5, 0.5, 1.0, 1.0]), values=torch.zeros(4, 3))
    algo(**options, group_size=2).compute_advantages(b0)
    assert not torch.allclose(b0.advantages, b.advantages, atol=1e-3)


@pytest.mark.parametrize("name", ["grpo", "dapo", "rloo", "reinforce_pp", "remax", "ppo"])
def test_adaptive_kl_coef_moves_for_every_algorithm(name):
    # measured KL .7 against target .35: error clipped to +.2; 4 samples, horizon 8 -> x 1.1
    a = algo(name, group_size=2, kl_coef=0.1, kl_in="reward", kl_estimator="k1", kl_target=0.35, kl_horizon=8)
    a.compute_advantages(kl_adv_batch(greedy_rewards=torch.tensor([0.5, 0.5, 1.0, 1.0]), values=torch.zeros(4, 3)))
    assert a.kl_coef == pytest.approx(0.1 * 1.1, rel=1e-9)


# --- a group baseline needs rollout.n >= 2, checked when the config loads (issue 8)

GROUP_BASELINES = [
    ("grpo", {}),
    ("grpo", {"scale": "none"}),
    ("grpo", {"scale": "batch"}),
    ("dapo", {}),
    ("rloo", {}),
    ("reinforce_pp", {"baseline": True}),
]


@pytest.mark.parametrize("name,options", GROUP_BASELINES)
def test_group_baseline_with_one_sample_per_prompt_is_rejected(name, options):
    with pytest.raises(ConfigError, match=rf"algorithm {name} needs rollout\.n >= 2.*rollout\.n=1"):
        algo(name, group_size=1, **options)
    algo(name, group_size=2, **options)  # the smallest valid group
    from rlvr.config import load_config

    overrides = ["rollout.n=1", f"algorithm.name={name}"] + [f"algorithm.{k}={v}" for k, v in options.items()]
    with pytest.raises(ConfigError, match=rf"algorithm {name} needs rollout\.n >= 2.*rollout\.n=1") as e:
        load_config(None, overrides)
    assert len(str(e.value).splitlines()) == 1
    load_config(None, [o.replace("rollout.n=1", "rollout.n=2") for o in overrides])


def test_load_config_validates_the_algorithm_but_leaves_unimportable_import_paths_to_the_trainer():
    from rlvr.config import load_config

    with pytest.raises(ConfigError, match="unknown algorithm 'gpro'"):
        load_config(None, ["algorithm.name=gpro"])
    with pytest.raises(ConfigError, match="algorithm.gamma"):
        load_config(None, ["algorithm={name: grpo, gamma: 0.9}"])
    # `rlvr eval` reads a run's config.yaml where the training code may not be importable
    cfg = load_config(None, ["algorithm={name: 'no_such_module_xyz:Thing'}"])
    assert cfg.algorithm.name == "no_such_module_xyz:Thing"


@pytest.mark.parametrize("name", ["reinforce_pp", "remax", "ppo"])
def test_algorithms_without_a_group_baseline_accept_one_sample_per_prompt(name):
    from rlvr.config import load_config

    algo(name, group_size=1)
    assert load_config(None, ["rollout.n=1", f"algorithm.name={name}"]).rollout.n == 1


def test_rlvr_train_rejects_a_group_of_one_before_anything_loads(tmp_path, monkeypatch, capsys):
    import rlvr.trainer
    from rlvr.cli import main

    made = []
    monkeypatch.setattr(rlvr.trainer, "Trainer", lambda *a, **k: made.append(a))
    cfg = helpers.write_config(tmp_path / "c.yaml", "tiny", rollout={"n": 1})
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rollout.n" in err[0] and "grpo" in err[0], err
    assert made == []


def test_entropy_bonus_subtracts_coef_times_agg_entropy():
    logprobs = padded([[-1.0, -2.0], [-0.5]], 2)
    entropy = padded([[1.0, 2.0], [0.5]], 2, pad=100.0)  # padding must not count
    base, m = algo("grpo").compute_loss(loss_batch(), logprobs, entropy=entropy)
    bonus, _ = algo("grpo", entropy_coef=0.01).compute_loss(loss_batch(), logprobs, entropy=entropy)
    # seq-mean-token-mean of entropy: (1.5 + 0.5) / 2 = 1.0 -> loss drops by 0.01 * 1.0
    assert float(base) == pytest.approx(0.5, abs=1e-6)
    assert float(base - bonus) == pytest.approx(0.01, abs=1e-7)
    assert float(m["entropy"]) == pytest.approx(3.5 / 3, abs=1e-6)  # token mean (1 + 2 + .5) / 3
    # token-mean aggregation: (1 + 2 + .5) / 3 = 7/6
    b0, _ = algo("grpo", loss_agg="token-mean").compute_loss(loss_batch(), logprobs, entropy=entropy)
    b1, _ = algo("grpo", loss_agg="token-mean", entropy_coef=0.3).compute_loss(loss_batch(), logprobs, entropy=entropy)
    assert float(b0 - b1) == pytest.approx(0.3 * 7 / 6, abs=1e-6)


def test_overlong_filter_masks_truncated_rows_in_prepare():
    def batch():
        return make_batch([3, 1, 3, 2], [1.0, 0.0, 0.5, 0.2], [0, 0, 1, 1], truncated=[True, False, True, False])

    b = batch()
    algo("grpo", overlong_filter=True).prepare(b)
    close(b.response_mask, [[0, 0, 0], [1, 0, 0], [0, 0, 0], [1, 1, 0]])
    b = batch()
    algo("grpo").prepare(b)  # off by default: nothing changes
    close(b.response_mask, batch().response_mask)


@pytest.mark.parametrize("name", ["grpo", "rloo", "reinforce_pp", "remax", "ppo", "dapo"])
def test_overlong_shaping_is_an_algorithm_option_applied_after_scoring(name):
    # max_new_tokens 4, buffer 2, factor 0.5: free up to 2 tokens, then -(|y| - 2) / 2 * 0.5
    b = make_batch([1, 2, 3, 4], [1.0, 1.0, 0.0, 1.0], [0, 0, 1, 1])
    b.scores = b.rewards.clone()
    algo(name, group_size=2, overlong_buffer=2, overlong_factor=0.5).after_scoring(b)
    close(b.rewards, [1.0, 1.0, -0.25, 0.5])
    close(b.scores, [1.0, 1.0, 0.0, 1.0])  # the verifier's score stays as it was
    off = make_batch([1, 2, 3, 4], [1.0, 1.0, 0.0, 1.0], [0, 0, 1, 1])
    algo(name, group_size=2).after_scoring(off)  # off by default
    close(off.rewards, [1.0, 1.0, 0.0, 1.0])


def test_overlong_buffer_is_checked_and_its_old_key_points_to_the_new_one():
    from rlvr.config import load_config

    with pytest.raises(ConfigError, match=r"algorithm\.overlong_buffer=4 must be below rollout\.max_new_tokens=4"):
        algo("grpo", overlong_buffer=4)
    assert load_config(None, ["algorithm.name=dapo", "algorithm.overlong_buffer=2"]).algorithm.overlong_buffer == 2
    for key in ("overlong_buffer", "overlong_factor"):
        with pytest.raises(ConfigError, match=rf"reward\.{key} has moved.*algorithm\.{key}") as e:
            load_config(None, ["algorithm.name=dapo", f"reward.{key}=2"])
        assert len(str(e.value).splitlines()) == 1


def test_hooks_default_to_nothing_and_dapo_derives_its_rounds_from_config():
    a = algo("grpo")
    b = make_batch([1, 2], [1.0, 0.0], [0, 0])
    assert (a.max_gen_batches, a.raise_on_shortfall, a.wants_entropy_grad) == (1, False, False)
    assert a.forward_extras(b) == {} and a.state_dict() == {"kl_coef": 0.0}
    a.after_rollout(b, trainer=None)
    assert b.extras == {}
    assert algo("grpo", entropy_coef=0.01).wants_entropy_grad
    d = algo("dapo", max_gen_batches=4, on_shortfall="raise")
    assert (d.max_gen_batches, d.raise_on_shortfall) == (4, True)
    assert algo("dapo", max_gen_batches=4, dynamic_sampling=False).max_gen_batches == 1
    k = algo("grpo", kl_coef=0.2)
    k.load_state_dict({"kl_coef": 0.3})
    assert k.kl_coef == 0.3 and k.state_dict() == {"kl_coef": 0.3}


def test_overlong_penalty_by_hand():
    from rlvr.rewards import overlong_penalty

    # L_max 10, buffer 4: free up to 6 tokens, then -(|y| - 6) / 4 * factor
    lengths = torch.tensor([1, 5, 6, 7, 8, 9, 10])
    close(overlong_penalty(lengths, 10, 4, 1.0), [0, 0, 0, -0.25, -0.5, -0.75, -1.0])
    close(overlong_penalty(lengths, 10, 4, 0.5), [0, 0, 0, -0.125, -0.25, -0.375, -0.5])
    close(overlong_penalty(lengths, 10, 0, 1.0), [0] * 7)  # no buffer: off


# ----------------------------------------------------------------------------- registry


def test_registering_a_name_twice_raises(monkeypatch):
    from rlvr.algorithms import GRPO, base, register_algorithm

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    with pytest.raises(ValueError, match="already registered"):
        register_algorithm("grpo")(type("Other", (GRPO,), {}))
    register_algorithm("fresh_name_for_test")(type("Fresh", (GRPO,), {}))
    with pytest.raises(ValueError, match="already registered"):
        register_algorithm("fresh_name_for_test")(type("Fresh2", (GRPO,), {}))
    with pytest.raises(TypeError):
        register_algorithm("not_an_algorithm")(object)


def test_unknown_name_lists_known_algorithms():
    with pytest.raises(ConfigError) as e:
        build_algorithm({"name": "grop"})
    msg = str(e.value)
    assert "did you mean 'grpo'" in msg
    for name in ("dapo", "grpo", "ppo", "reinforce_pp", "remax", "rloo"):
        assert name in msg.split("known:")[1]


def test_import_path_module_colon_class(tmp_path, monkeypatch):
    (tmp_path / "my_algo_for_test.py").write_text(
        "from rlvr.algorithms import GRPO\n"
        "class Halved(GRPO):\n"
        "    def scalar_advantages(self, batch):\n"
        "        return super().scalar_advantages(batch) / 2\n"
        "class NotAnAlgorithm:\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    a = build_algorithm({"name": "my_algo_for_test:Halved", "scale": "none"})
    assert type(a).__name__ == "Halved"
    b = make_batch(LENGTHS, REWARDS, GROUP)
    a.compute_advantages(b)
    close(b.advantages[:, 0], [1 / 3, -1 / 6, -1 / 6, 0.0, 0.25, -0.25])  # half the centred reward
    with pytest.raises(ConfigError, match="not an Algorithm subclass"):
        build_algorithm({"name": "my_algo_for_test:NotAnAlgorithm"})
    with pytest.raises(ConfigError, match="cannot import"):
        build_algorithm({"name": "my_algo_for_test:Missing"})
    with pytest.raises(ConfigError, match="cannot import"):
        build_algorithm({"name": "no_such_module_xyz:Thing"})


def test_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match="algorithm.clip_hihg"):
        build_algorithm({"name": "grpo", "clip_hihg": 0.3})
    with pytest.raises(ConfigError, match="algorithm.gamma"):
        build_algorithm({"name": "grpo", "gamma": 0.9})  # a PPO option is not a GRPO option


# ----------------------------------------------------------------------------- training through the Trainer


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return make_random_model(tmp_path_factory.mktemp("model") / "m")


def write_config(path: Path, model: Path, **sections) -> Path:
    return helpers.write_config(path, model, None, **sections)


def hashed_reward(problems, completions):
    # a deterministic reward in [0, 1) that differs between any two different completions,
    # so every group has spread and every advantage estimator gives non-zero advantages
    return [int(hashlib.sha256(c.encode()).hexdigest()[:8], 16) / 2**32 for c in completions]


def train_two_steps(tmp_path, model, algorithm: dict, reward_fn=hashed_reward):
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    cfg = load_config(write_config(tmp_path / "c.yaml", model, algorithm=algorithm))
    trainer = Trainer(cfg, reward_fn=reward_fn)
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return trainer, rows


def unchanged_parameters(model: Path, final: Path) -> list[str]:
    from transformers import AutoModelForCausalLM

    before = dict(AutoModelForCausalLM.from_pretrained(model).named_parameters())
    after = dict(AutoModelForCausalLM.from_pretrained(final).named_parameters())
    assert before.keys() == after.keys()
    return [n for n, p in before.items() if torch.equal(p, after[n])]


@pytest.mark.parametrize(
    "options",
    [
        {"name": "grpo"},
        {"name": "rloo"},
        {"name": "reinforce_pp"},
        {"name": "reinforce_pp", "baseline": True},
        {"name": "remax"},
        {"name": "ppo"},
        {"name": "ppo", "kl_coef": 0.05},
        {"name": "dapo"},
        {"name": "grpo", "kl_coef": 0.05, "kl_in": "reward"},
        {"name": "dapo", "kl_coef": 0.05, "kl_in": "reward"},
    ],
    ids=[
        "grpo",
        "rloo",
        "reinforce_pp",
        "reinforce_pp_baseline",
        "remax",
        "ppo",
        "ppo_kl",
        "dapo",
        "grpo_kl_reward",
        "dapo_kl_reward",
    ],
)
def test_two_steps_change_every_policy_parameter(tmp_path, random_model, options):
    trainer, rows = train_two_steps(tmp_path, random_model, options)
    assert len(rows) == 2
    unchanged = unchanged_parameters(random_model, tmp_path / "run" / "final")
    assert not unchanged, f"{options}: parameters that did not change: {unchanged}"
    for row in rows:
        assert math.isfinite(row["loss"])
    if options["name"] == "ppo":
        assert trainer.algorithm.critic in trainer.trained and "value_loss" in rows[0]
    if options.get("kl_coef"):
        # the reference model was loaded and its log-probs used: KL in the reward is logged,
        # 0 on step 1 (policy == reference) and non-zero once the policy has moved
        assert trainer.algorithm.ref is not None
        assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)
        assert rows[1]["kl"] != 0.0
    else:
        assert trainer.algorithm.ref is None


def test_custom_subclass_trains_without_touching_the_core(tmp_path, random_model, monkeypatch):
    from rlvr.algorithms import GRPO, base, register_algorithm

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    seen: list[torch.Tensor] = []

    @register_algorithm("sign_grpo")
    class SignGRPO(GRPO):
        """Advantage = sign of the group-centred reward."""

        def scalar_advantages(self, batch):
            mean = torch.stack([batch.rewards[batch.group == g].mean() for g in batch.group])
            return torch.sign(batch.rewards - mean)

        def compute_advantages(self, batch):
            super().compute_advantages(batch)
            seen.append(batch.advantages.clone())

    trainer, rows = train_two_steps(tmp_path, random_model, {"name": "sign_grpo"})
    assert isinstance(trainer.algorithm, SignGRPO)
    assert len(seen) == 2 and len(rows) == 2
    for adv in seen:
        assert set(adv.unique().tolist()) <= {-1.0, 0.0, 1.0}
        assert (adv != 0).any()
    assert not unchanged_parameters(random_model, tmp_path / "run" / "final")
