"""The methods beyond the six (issue 15): policy losses composable with any advantage (GSPO, CISPO,
Clip-Cov, KL-Cov, GMPO, GPG) and advantage estimators (GPG, OPO, pass@k). Each is checked against
values worked out by hand and against a plain per-token loop of verl's definition
(verl/trainer/ppo/core_algos.py), written here independently; then two real training steps of
each recipe on the embedded tiny model."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from rlvr.algorithms import build_algorithm, registered_algorithms, registered_policy_losses
from rlvr.batch import RolloutBatch
from rlvr.config import ConfigError
from rlvr.tasks import Problem

# ----------------------------------------------------------------------------- helpers


def algo(name: str = "grpo", group_size: int | None = 3, max_new_tokens: int | None = 4, **options):
    return build_algorithm({"name": name, **options}, max_new_tokens=max_new_tokens, group_size=group_size)


def make_batch(lengths, rewards, group, R=None) -> RolloutBatch:
    B, R = len(lengths), R or max(lengths)
    mask = (torch.arange(R)[None, :] < torch.tensor(lengths)[:, None]).float()  # [B, R]
    return RolloutBatch(
        input_ids=torch.full((B, 2 + R), 5, dtype=torch.long),
        attention_mask=torch.cat([torch.ones(B, 2, dtype=torch.long), mask.long()], 1),
        response_mask=mask,
        prompt_len=2,
        group=torch.tensor(group, dtype=torch.long),
        problems=[Problem(prompt=f"p{g}", answer="0") for g in group],
        completions=["x" * n for n in lengths],
        truncated=torch.tensor([False] * B),
        rewards=torch.tensor(rewards, dtype=torch.float32),
    )


def loss_and_grad(loss_name, logprob, old, adv, mask, *, name="grpo", agg_kw=None, **options):
    """(loss, d loss / d logprob, metrics) of the policy loss `loss_name` (a name or a spec dict)."""
    a = algo(name, policy_loss=loss_name, **options)
    lp = logprob.clone().requires_grad_(True)
    loss, metrics = a.policy_loss(lp, old, adv, mask, agg_kw or {})
    loss.backward()
    return loss.detach(), lp.grad, metrics


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(
        torch.as_tensor(actual).detach().double(), torch.as_tensor(expected, dtype=torch.float64), atol=atol, rtol=1e-6
    )


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def random_case(seed, B=5, T=6, garbage=True):
    """Ragged batch: log-probs, old log-probs (near them), token advantages constant per row, mask;
    padding holds garbage (inf / NaN) that must not reach any result."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double()
    lp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3 - 0.05
    old = lp + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(B, 1, generator=g, dtype=torch.float64).expand(B, T).clone()
    if garbage:
        old = torch.where(mask.bool(), old, torch.tensor(float("nan"), dtype=torch.float64))
    return lp, old, adv * mask, mask


def loop_grad(fn, lp):
    x = lp.clone().requires_grad_(True)
    out = fn(x)
    out.backward()
    return out.detach(), x.grad


# ----------------------------------------------------------------------------- registry, composition


def test_registered_by_name():
    assert {"gspo", "cispo", "clip_cov", "kl_cov", "geo_mean", "gpg", "ppo"} <= set(registered_policy_losses())
    assert {"gpg", "opo", "passk"} <= set(registered_algorithms())
    assert algo().config.policy_loss == "ppo"  # every algorithm's default: the PPO-clipped loss


def test_default_ppo_loss_is_the_shared_clipped_loss_bitwise():
    from rlvr.losses import agg_loss, clipped_pg_loss

    lp, old, adv, mask = random_case(0, garbage=False)
    old[0, 0], adv[0] = lp[0, 0] - 2.0, -adv[0].abs()  # ratio e^2 on a negative advantage: the dual clip bounds it
    old[1, 0], adv[1] = lp[1, 0] - 0.5, adv[1].abs()  # ratio e^0.5 on a positive one: clipped above
    for name, opts in [("grpo", {}), ("dapo", {}), ("rloo", {"loss_agg": "seq-mean-token-sum-norm"})]:
        a = algo(name, **opts)
        loss, _ = a.policy_loss(lp, old, adv, mask, {"norm_constant": 6.0})
        c = a.config
        pg, _ = clipped_pg_loss(lp, old, adv, mask, clip_low=c.clip_low, clip_high=c.clip_high, clip_c=c.clip_c)
        assert torch.equal(loss, agg_loss(pg, mask, c.loss_agg, norm_constant=6.0))


@pytest.mark.parametrize("loss", ["gspo", "cispo", "clip_cov", "kl_cov", "geo_mean", "gpg"])
@pytest.mark.parametrize("advantage", ["grpo", "rloo", "reinforce_pp", "opo", "passk"])
def test_every_loss_composes_with_every_advantage(advantage, loss):
    a = algo(advantage, group_size=4, policy_loss=loss, **({"k": 2} if advantage == "passk" else {}))
    b = make_batch([3, 1, 2, 2], [1.0, 0.0, 0.0, 1.0], [0, 0, 0, 0])
    a.compute_advantages(b)
    lp, _, _, _ = random_case(1, B=4, T=3, garbage=False)
    b.old_logprobs = lp.float().clone()  # on-policy, the first minibatch of a step
    x = lp.float().requires_grad_(True)
    out, metrics = a.compute_loss(b, x)
    out.backward()
    assert torch.isfinite(out) and x.grad is not None and x.grad.abs().sum() > 0
    assert metrics["pg_loss"] == out.detach()


def test_policy_loss_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"algorithm.policy_loss: unknown policy loss 'gsop'; did you mean 'gspo'"):
        algo(policy_loss="gsop")
    with pytest.raises(ConfigError, match=r"algorithm.policy_loss.ratoi"):
        algo(policy_loss={"name": "clip_cov", "ratoi": 0.1})
    with pytest.raises(ConfigError, match=r"algorithm.policy_loss.name: missing"):
        algo(policy_loss={"ratio": 0.1})
    # an algorithm-level option the loss does not read would silently do nothing: refused, pointing to its own
    with pytest.raises(
        ConfigError, match=r"algorithm.clip_high=0.3 is not read by policy loss 'gspo'.*gspo, clip_high"
    ):
        algo(policy_loss="gspo", clip_high=0.3)
    with pytest.raises(ConfigError, match=r"algorithm.clip_c=5.0 is not read by policy loss 'clip_cov'"):
        algo(policy_loss="clip_cov", clip_c=5.0)
    with pytest.raises(ConfigError, match=r"algorithm.loss_agg='token-mean' is not read by policy loss 'geo_mean'"):
        algo(policy_loss="geo_mean", loss_agg="token-mean")
    # defaults of the algorithm's own class are fine (DAPO's clip_high 0.28), and read options are too
    algo("dapo", policy_loss="gspo")
    algo(policy_loss="clip_cov", clip_high=0.28)


def test_policy_loss_validated_at_config_load(tmp_path):
    from rlvr.config import load_config

    p = tmp_path / "r.yaml"
    p.write_text("base: " + str(_recipes() / "grpo.yaml") + "\nalgorithm: {policy_loss: {name: kl_cov, coef: -1}}\n")
    with pytest.raises(ConfigError, match=r"algorithm.policy_loss.coef"):
        load_config(p)


def test_token_tis_correction_refused_for_losses_it_would_weight_only_approximately(tmp_path):
    # rollout.is_correction: token_tis multiplies the advantages by per-token weights (rlvr/mismatch.py);
    # that weights each token's loss exactly only for losses made of terms linear in A_it
    for name in ("ppo", "gspo", "cispo", "gpg"):
        algo(policy_loss=name).policy_loss.check_token_weights("token_tis")
    lp, old, adv, mask = random_case(3, garbage=False)
    w = torch.rand(adv.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    for name in ("gspo", "cispo", "gpg"):  # the claim, checked: weighted advantages == weighted token losses
        a = algo(policy_loss=name, loss_agg="token-mean") if name != "gspo" else algo(policy_loss=name)
        weighted, _ = a.policy_loss(lp, old, adv * w, mask, {})
        per_token = torch.stack(
            [
                a.policy_loss(lp, old, adv * (torch.arange(adv.numel()).view_as(adv) == k), mask, {})[0]
                for k in range(adv.numel())
            ]
        )  # each token's share of the loss, alone
        close(weighted, (per_token * w.flatten()).sum(), atol=1e-12)
    for name in ("clip_cov", "kl_cov", "geo_mean"):
        with pytest.raises(ConfigError, match=f"policy_loss '{name}' uses the advantages otherwise"):
            algo(policy_loss=name).policy_loss.check_token_weights("token_tis")
        algo(policy_loss=name).policy_loss.check_token_weights("none")
    from rlvr.config import check_algorithm, load_config

    cfg = load_config(_recipes() / "kl_cov.yaml", [f"output_dir={tmp_path}"])
    cfg.rollout.is_correction = "token_tis"
    with pytest.raises(ConfigError, match="rollout.is_correction=token_tis weights the advantages"):
        check_algorithm(cfg)


# ----------------------------------------------------------------------------- GSPO


def test_gspo_by_hand():
    # one sequence of 2 tokens, l - l_old = [0.1, -0.1]: s = exp(mean) = exp(0) = 1, inside the clip range;
    # A = 2: loss = seq-mean-token-mean of -A s = -2; d/dl_t = -A s / |y| = -1 on each token
    lp, old, mask = t([[-1.0, -2.0]]), t([[-1.1, -1.9]]), t([[1.0, 1.0]])
    loss, grad, m = loss_and_grad("gspo", lp, old, t([[2.0, 2.0]]), mask)
    close(loss, -2.0)
    close(grad, [[-1.0, -1.0]])
    assert float(m["clip_frac"]) == 0.0
    # l - l_old = [0.002, 0.002]: s = e^0.002 = 1.002002 > 1 + 4e-4.
    # A = +1: the clipped term -1.0004 is the larger: loss -1.0004, no gradient on the sequence
    old = lp - 0.002
    loss, grad, m = loss_and_grad("gspo", lp, old, t([[1.0, 1.0]]), mask)
    close(loss, -1.0004)
    close(grad, [[0.0, 0.0]])
    assert float(m["clip_frac"]) == 1.0
    # A = -1: unclipped 1.002002 > clipped 1.0004: loss e^0.002, d/dl_t = s / 2 = 0.501001
    loss, grad, _ = loss_and_grad("gspo", lp, old, t([[-1.0, -1.0]]), mask)
    close(loss, math.exp(0.002))
    close(grad, [[math.exp(0.002) / 2] * 2])
    # s = e^-0.002 < 1 - 3e-4 with A = -1: clipped term wins, no gradient
    loss, grad, _ = loss_and_grad("gspo", lp, lp + 0.002, t([[-1.0, -1.0]]), mask)
    close(loss, 1 - 3e-4)
    close(grad, [[0.0, 0.0]])


def verl_gspo_loop(lp, old, adv, mask, low, high):
    """verl compute_policy_loss_gspo, one token at a time; seq-mean-token-mean over the rows."""
    total, rows = 0.0, lp.shape[0]
    for i in range(rows):
        n = int(mask[i].sum())
        if n == 0:
            continue
        seq = sum((lp[i, j] - old[i, j]) for j in range(n)) / n
        row = 0.0
        for j in range(n):
            log_s = torch.clamp(lp[i, j] - lp[i, j].detach() + seq.detach(), max=10.0)
            s = torch.exp(log_s)
            a = adv[i, j]
            row = row + torch.maximum(-a * s, -a * torch.clamp(s, 1 - low, 1 + high))
        total = total + row / n
    return total / rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gspo_matches_verl_loop(seed):
    lp, old, adv, mask = random_case(seed)
    old = lp + (old - lp) * 0.003  # sequence ratios near the 3e-4 / 4e-4 range: some clipped, some not
    loss, grad, _ = loss_and_grad("gspo", lp, old, adv, mask)
    ref, ref_grad = loop_grad(lambda x: verl_gspo_loop(x, old, adv, mask, 3e-4, 4e-4), lp)
    close(loss, ref, atol=1e-12)
    close(grad, ref_grad, atol=1e-12)
    assert (grad == 0).any() and (grad[mask.bool()] != 0).any()  # both branches exercised


# ----------------------------------------------------------------------------- CISPO


def test_cispo_by_hand():
    # token 0: ratio 0.8/0.5 = 1.6, A = +1 -> weight clip(1.6, ., 1.2) = 1.2 (detached);
    #   loss -1.2 * 1 * log 0.8 = 0.2677723, gradient -1.2 (PPO would give 0 here: the point of CISPO)
    # token 1: ratio 0.25/0.5 = 0.5, A = -1, no lower bound -> weight 0.5; loss -0.5 * -1 * log 0.25 = -0.6931472,
    #   gradient +0.5
    lp, old, mask = t([[math.log(0.8), math.log(0.25)]]), t([[math.log(0.5), math.log(0.5)]]), t([[1.0, 1.0]])
    adv = t([[1.0, -1.0]])
    loss, grad, m = loss_and_grad("cispo", lp, old, adv, mask, loss_agg="token-mean")
    close(loss, (-1.2 * math.log(0.8) + 0.5 * math.log(0.25)) / 2)
    close(grad, [[-1.2 / 2, 0.5 / 2]])
    assert float(m["clip_frac"]) == 0.5
    # a lower bound of 1 - 0.2: token 1's weight becomes 0.8
    _, grad, _ = loss_and_grad({"name": "cispo", "clip_low": 0.2}, lp, old, adv, mask, loss_agg="token-mean")
    close(grad, [[-1.2 / 2, 0.8 / 2]])


def verl_cispo_loop(lp, old, adv, mask, low, high):
    """verl compute_policy_loss_cispo, token by token, token-mean."""
    total, n = 0.0, 0
    for i, j in itertools.product(range(lp.shape[0]), range(lp.shape[1])):
        if mask[i, j] == 0:
            continue
        r = torch.exp(torch.clamp(lp[i, j] - old[i, j], -20.0, 20.0))
        w = torch.clamp(r, 1 - low, 1 + high).detach()
        total = total - w * adv[i, j] * lp[i, j]
        n += 1
    return total / n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cispo_matches_verl_loop(seed):
    lp, old, adv, mask = random_case(seed)
    spec = {"name": "cispo", "clip_low": 10.0, "clip_high": 0.2}  # verl's example: clip_ratio_low=10
    loss, grad, _ = loss_and_grad(spec, lp, old, adv, mask, loss_agg="token-mean")
    ref, ref_grad = loop_grad(lambda x: verl_cispo_loop(x, old, adv, mask, 10.0, 0.2), lp)
    close(loss, ref, atol=1e-12)
    close(grad, ref_grad, atol=1e-12)
    loss2, grad2, _ = loss_and_grad("cispo", lp, old, adv, mask, loss_agg="token-mean")  # clip_low null: same
    close(loss2, ref, atol=1e-12)
    close(grad2, ref_grad, atol=1e-12)


# ----------------------------------------------------------------------------- Clip-Cov, KL-Cov

# one sequence of 4 tokens, A = [2, 2, -2, -2] (mean 0), l = [-0.5, -3.5, -0.5, -3.5] (mean -2):
# cov = A (l + 2) = [3, -3, -3, 3]: tokens 0 and 3 lie in (lb, ub) = (1, 5)
COV_LP, COV_ADV, COV_MASK = t([[-0.5, -3.5, -0.5, -3.5]]), t([[2.0, 2.0, -2.0, -2.0]]), t([[1.0] * 4])


def test_clip_cov_by_hand():
    # on-policy (ratio 1): per-token loss -A = [-2, -2, 2, 2]; ratio 0.5 -> max(int(0.5 * 4), 1) = 2 tokens cut,
    # both candidates: loss [0, -2, 2, 0], token-mean 0; gradient -A r / 4 on the kept tokens, 0 on the cut
    loss, grad, m = loss_and_grad(
        {"name": "clip_cov", "ratio": 0.5}, COV_LP, COV_LP.clone(), COV_ADV, COV_MASK, loss_agg="token-mean"
    )
    close(loss, 0.0)
    close(grad, [[0.0, -0.5, 0.5, 0.0]])
    assert float(m["clip_cov_frac"]) == 0.5
    # without the cut (ratio small, but at least one token is cut): exactly one of tokens 0 and 3 loses its gradient
    for seed in range(4):
        torch.manual_seed(seed)
        _, grad, _ = loss_and_grad("clip_cov", COV_LP, COV_LP.clone(), COV_ADV, COV_MASK, loss_agg="token-mean")
        zero = (grad[0] == 0).nonzero().squeeze(-1).tolist()
        assert zero in ([0], [3])
    # a token the PPO clip already clipped is no candidate: token 0 with ratio e^0.5 > 1.2 and A > 0
    old = COV_LP.clone()
    old[0, 0] -= 0.5
    loss, grad, m = loss_and_grad(
        {"name": "clip_cov", "ratio": 0.5}, COV_LP, old, COV_ADV, COV_MASK, loss_agg="token-mean"
    )
    close(grad, [[0.0, -0.5, 0.5, 0.0]])  # token 0: PPO-clipped (0 gradient), token 3: cut
    close(loss, (-2 * 1.2 - 2 + 2 + 0) / 4)
    assert float(m["clip_cov_frac"]) == 0.25 and float(m["clip_frac"]) == 0.25


def verl_clip_cov_loop(lp, old, adv, mask, low, high, ratio, lb, ub, seed):
    """verl compute_policy_loss_clip_cov, token by token: candidates in row-major order, the same random draw."""
    toks = [(i, j) for i, j in itertools.product(range(lp.shape[0]), range(lp.shape[1])) if mask[i, j] > 0]
    mean_a = sum(float(adv[i, j]) for i, j in toks) / len(toks)
    mean_l = sum(float(lp[i, j].detach()) for i, j in toks) / len(toks)
    losses, cands = {}, []
    for i, j in toks:
        r = torch.exp(lp[i, j] - old[i, j])
        l1, l2 = -adv[i, j] * r, -adv[i, j] * torch.clamp(r, 1 - low, 1 + high)
        losses[i, j] = torch.maximum(l1, l2)
        cov = (float(adv[i, j]) - mean_a) * (float(lp[i, j].detach()) - mean_l)
        if not bool(l2 > l1) and lb < cov < ub:
            cands.append((i, j))
    n_cut = max(int(ratio * len(toks)), 1)
    torch.manual_seed(seed)
    if cands:
        perm = torch.randperm(len(cands))
        for p in perm[: min(n_cut, len(cands))].tolist():
            losses[cands[p]] = losses[cands[p]] * 0.0
    return sum(losses.values()) / len(toks)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clip_cov_matches_verl_loop(seed):
    lp, old, adv, mask = random_case(seed, B=6, T=8)
    adv = adv * 3  # covariances reach (lb, ub) = (0.3, 5) for a handful of tokens
    spec = {"name": "clip_cov", "ratio": 0.05, "lb": 0.3, "ub": 5.0}
    torch.manual_seed(100 + seed)
    loss, grad, m = loss_and_grad(spec, lp, old, adv, mask, loss_agg="token-mean")
    ref, ref_grad = loop_grad(lambda x: verl_clip_cov_loop(x, old, adv, mask, 0.2, 0.2, 0.05, 0.3, 5.0, 100 + seed), lp)
    close(loss, ref, atol=1e-12)
    close(grad, ref_grad, atol=1e-12)
    assert float(m["clip_cov_frac"]) > 0  # the cut happened


def test_kl_cov_by_hand():
    # l = [-0.5, -3.5, -1, -3] (mean -2): cov = A (l + 2) = [3, -3, -2, 2]; ratio 0.25 -> top-1: token 0.
    # token 0 has l - l_old = 0.1: loss -2 e^0.1 + 1 * |0.1| = -2.1103418; the others are on-policy: [-2, 2, 2].
    # token-mean: (-2.1103418 - 2 + 2 + 2) / 4; gradient token 0: (-2 e^0.1 + 1) / 4 = -0.3025855
    lp = t([[-0.5, -3.5, -1.0, -3.0]])
    old = lp.clone()
    old[0, 0] -= 0.1
    spec = {"name": "kl_cov", "ratio": 0.25}
    loss, grad, m = loss_and_grad(spec, lp, old, COV_ADV, COV_MASK, loss_agg="token-mean")
    close(loss, (-2 * math.exp(0.1) + 0.1 - 2 + 2 + 2) / 4)
    close(grad, [[(-2 * math.exp(0.1) + 1) / 4, -0.5, 0.5, 0.5]])
    assert float(m["kl_cov_frac"]) == 0.25
    # coef 0: the plain (unclipped) policy gradient
    loss, grad, _ = loss_and_grad({**spec, "coef": 0.0}, lp, old, COV_ADV, COV_MASK, loss_agg="token-mean")
    close(grad, [[-2 * math.exp(0.1) / 4, -0.5, 0.5, 0.5]])


def verl_kl_cov_loop(lp, old, adv, mask, ratio, coef):
    """verl compute_policy_loss_kl_cov, token by token, token-mean."""
    toks = [(i, j) for i, j in itertools.product(range(lp.shape[0]), range(lp.shape[1])) if mask[i, j] > 0]
    mean_a = sum(float(adv[i, j]) for i, j in toks) / len(toks)
    mean_l = sum(float(lp[i, j].detach()) for i, j in toks) / len(toks)
    cov = {tok: (float(adv[tok]) - mean_a) * (float(lp[tok].detach()) - mean_l) for tok in toks}
    top = sorted(toks, key=lambda tok: -cov[tok])[: max(1, int(len(toks) * ratio))]
    total = 0.0
    for tok in toks:
        d = lp[tok] - old[tok]
        loss = -adv[tok] * torch.exp(d)
        if tok in top:
            loss = loss + coef * torch.abs(d)
        total = total + loss
    return total / len(toks)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_cov_matches_verl_loop(seed):
    lp, old, adv, mask = random_case(seed, B=6, T=8)
    spec = {"name": "kl_cov", "ratio": 0.1, "coef": 0.7}
    loss, grad, m = loss_and_grad(spec, lp, old, adv, mask, loss_agg="token-mean")
    ref, ref_grad = loop_grad(lambda x: verl_kl_cov_loop(x, old, adv, mask, 0.1, 0.7), lp)
    close(loss, ref, atol=1e-12)
    close(grad, ref_grad, atol=1e-12)
    assert float(m["kl_cov_frac"]) > 0


# ----------------------------------------------------------------------------- GMPO


def test_gmpo_by_hand():
    # one sequence, 2 tokens, d = l - l_old = [0.6, -0.2], clip +-0.4 in log space.
    # A = +1: d' = min(d, clip(d)) = [0.4, -0.2]; rho = exp(0.1) = 1.1051709; loss -rho;
    #   gradient: token 0 clipped (0), token 1: -A rho / 2 = -0.5525855
    lp, mask = t([[-1.0, -2.0]]), t([[1.0, 1.0]])
    old = lp - t([[0.6, -0.2]])
    loss, grad, m = loss_and_grad("geo_mean", lp, old, t([[1.0, 1.0]]), mask)
    close(loss, -math.exp(0.1))
    close(grad, [[0.0, -math.exp(0.1) / 2]])
    assert float(m["clip_frac_high"]) == 0.5 and float(m["clip_frac_low"]) == 0.0
    # A = -1: d' = max(d, clip(d)) = [0.6, -0.2] (a negative advantage is clipped from below only);
    #   rho = exp(0.2); loss +rho; gradient rho / 2 on both tokens
    loss, grad, m = loss_and_grad("geo_mean", lp, old, t([[-1.0, -1.0]]), mask)
    close(loss, math.exp(0.2))
    close(grad, [[math.exp(0.2) / 2] * 2])
    # two sequences in a minibatch of four (global_seqs): the sum over sequences / 4
    lp2, old2, mask2 = lp.repeat(2, 1), old.repeat(2, 1), mask.repeat(2, 1)
    loss, _, _ = loss_and_grad("geo_mean", lp2, old2, t([[1.0, 1.0], [-1.0, -1.0]]), mask2, agg_kw={"global_seqs": 4})
    close(loss, (-math.exp(0.1) + math.exp(0.2)) / 4)


def verl_gmpo_loop(lp, old, adv, mask, low, high):
    """verl compute_policy_loss_geo_mean, token by token; mean over the rows."""
    total = 0.0
    for i in range(lp.shape[0]):
        n = int(mask[i].sum())
        logsum, asum = 0.0, 0.0
        for j in range(n):
            d = lp[i, j] - old[i, j]
            sgn = float(torch.sign(adv[i, j]))
            dc = torch.clamp(d, -low, high)
            logsum = logsum + sgn * torch.minimum(sgn * d, sgn * dc)
            asum += float(adv[i, j])
        total = total - (asum / (n + 1e-8)) * torch.exp(logsum / (n + 1e-8))
    return total / lp.shape[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gmpo_matches_verl_loop(seed):
    lp, old, adv, mask = random_case(seed)
    loss, grad, _ = loss_and_grad("geo_mean", lp, old, adv, mask)
    ref, ref_grad = loop_grad(lambda x: verl_gmpo_loop(x, old, adv, mask, 0.4, 0.4), lp)
    close(loss, ref, atol=1e-7)  # verl's +1e-8 in the length: a relative 1e-8
    close(grad, ref_grad, atol=1e-7)


# ----------------------------------------------------------------------------- GPG


def test_gpg_loss_by_hand():
    # L = token-mean of -A l: A = [[1, 1], [-2, 0]], l = [[-1, -2], [-0.5, pad]]: (1 + 2 - 1) / 3 = 2/3;
    # d/dl = -A / 3; old log-probs play no part
    lp, mask, adv = t([[-1.0, -2.0], [-0.5, 9.0]]), t([[1.0, 1.0], [1.0, 0.0]]), t([[1.0, 1.0], [-2.0, 0.0]])
    loss, grad, _ = loss_and_grad("gpg", lp, lp + 5.0, adv, mask, loss_agg="token-mean")
    close(loss, 2 / 3)
    close(grad, [[-1 / 3, -1 / 3], [2 / 3, 0.0]])


def test_gpg_advantage_by_hand_both_alphas():
    # groups [1, 0, 0], [1, 1, 1], [0, 0, 0]: B = 9; centred rewards [2/3, -1/3, -1/3, 0, ...]
    # paper: M = 6 samples in the all-equal groups: alpha = 9 / (9 - 6) = 3
    # verl: 4 nonzero rewards: alpha = 9 / 4 = 2.25
    lengths, rewards, group = [2, 1, 2, 1, 1, 2, 1, 1, 1], [1, 0, 0, 1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1, 2, 2, 2]
    b = make_batch(lengths, rewards, group)
    a = algo("gpg")
    assert a.config.policy_loss == "gpg" and a.config.loss_agg == "token-mean"
    a.compute_advantages(b)
    close(b.advantages[:, 0], [2.0, -1.0, -1.0] + [0.0] * 6)
    assert b.metrics["gpg_alpha"] == 3.0
    assert torch.all(b.advantages[~b.response_mask.bool()] == 0)
    b = make_batch(lengths, rewards, group)
    algo("gpg", alpha="nonzero").compute_advantages(b)
    close(b.advantages[:, 0], [1.5, -0.75, -0.75] + [0.0] * 6)
    # equal rewards that are not exact in binary (0.3 * 3 / 3 != 0.3 in floats) still make a group without signal
    b = make_batch(lengths, [1, 0, 0, 0.3, 0.3, 0.3, 0.1, 0.1, 0.1], group)
    algo("gpg").compute_advantages(b)
    assert b.metrics["gpg_alpha"] == 3.0


def verl_gpg_advantage_loop(scores, index):
    """verl compute_gpg_outcome_advantage (f_norm 1), sample by sample."""
    bsz = len(scores)
    alpha = bsz / max(sum(1 for s in scores if s != 0), 1)
    groups: dict[int, list[float]] = {}
    for s, g in zip(scores, index, strict=True):
        groups.setdefault(g, []).append(s)
    return [alpha * (s - sum(groups[g]) / len(groups[g])) for s, g in zip(scores, index, strict=True)]


def test_gpg_nonzero_alpha_matches_verl_loop():
    g = torch.Generator().manual_seed(3)
    rewards = (torch.rand(12, generator=g) > 0.6).float() * torch.rand(12, generator=g)
    group = [i // 4 for i in range(12)]
    b = make_batch([3] * 12, rewards.tolist(), group)
    algo("gpg", group_size=4, alpha="nonzero").compute_advantages(b)
    close(b.advantages[:, 0], verl_gpg_advantage_loop(rewards.tolist(), group), atol=1e-6)


# ----------------------------------------------------------------------------- OPO


def test_opo_by_hand():
    # group 0: lengths [1, 3], rewards [1, 0]: b = (1*1 + 3*0) / 4 = 0.25 -> A = [0.75, -0.25]
    # group 1: lengths [2, 2], rewards [1, 1]: b = 1 -> A = [0, 0]
    b = make_batch([1, 3, 2, 2], [1, 0, 1, 1], [0, 0, 1, 1])
    algo("opo", group_size=2).compute_advantages(b)
    close(b.advantages, [[0.75, 0, 0], [-0.25, -0.25, -0.25], [0, 0, 0], [0, 0, 0]])


def verl_opo_loop(scores, lengths, index):
    """verl compute_opo_outcome_advantage, sample by sample (a group of one: baseline 0)."""
    out = []
    for i, g in enumerate(index):
        members = [j for j, h in enumerate(index) if h == g]
        if len(members) == 1:
            b = 0.0
        else:
            b = sum(lengths[j] * scores[j] for j in members) / sum(lengths[j] for j in members)
        out.append(scores[i] - b)
    return out


def test_opo_matches_verl_loop():
    g = torch.Generator().manual_seed(4)
    lengths = torch.randint(1, 7, (10,), generator=g).tolist()
    rewards = torch.rand(10, generator=g).tolist()
    group = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]  # group 3 holds one response
    b = make_batch(lengths, rewards, group)
    algo("opo", group_size=2).compute_advantages(b)
    expected = verl_opo_loop(rewards, lengths, group)
    for i, n in enumerate(lengths):
        close(b.advantages[i, :n], [expected[i]] * n, atol=1e-6)


# ----------------------------------------------------------------------------- pass@k


def test_passk_analytic_by_hand():
    # N = 4, one correct, k = 2: R_bar = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5, sigma = sqrt(0.25) = 0.5
    # A_pos = (1 - 0.5) / 0.5 = 1;  A_neg = (1 - 0.5 - C(2,1)/C(3,1)) / 0.5 = (0.5 - 2/3) / 0.5 = -1/3
    b = make_batch([2, 1, 2, 3], [0, 1, 0, 0], [0, 0, 0, 0])
    algo("passk", group_size=4, k=2).compute_advantages(b)
    e = 1e-6
    a_neg = (0.5 - 2 / 3) / (0.5 + e)  # -1/3
    close(b.advantages[:, 0], [a_neg, 0.5 / (0.5 + e), a_neg, a_neg])
    # k = 1 is GRPO with the biased std: p = 1/4, sigma = sqrt(3/16): A = 0.75/sigma, -0.25/sigma
    b = make_batch([2, 1, 2, 3], [0, 1, 0, 0], [0, 0, 0, 0])
    algo("passk", group_size=4, k=1).compute_advantages(b)
    s = math.sqrt(3 / 16)
    close(b.advantages[:, 0], [-0.25 / (s + e), 0.75 / (s + e), -0.25 / (s + e), -0.25 / (s + e)])
    # all correct, all wrong, or fewer wrong than k (every k-subset passes): no signal, no NaN
    b = make_batch([1] * 12, [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0], [0] * 4 + [1] * 4 + [2] * 4)
    algo("passk", group_size=4, k=2).compute_advantages(b)
    assert torch.equal(b.advantages, torch.zeros_like(b.advantages))


def subset_enumeration_passk(correct, k):
    """Chen et al.'s definition by brute force: each response's advantage is the mean reward of the
    k-subsets holding it minus the mean over all k-subsets, over the std of the subset rewards."""
    N = len(correct)
    subsets = list(itertools.combinations(range(N), k))
    reward = {s: float(any(correct[i] for i in s)) for s in subsets}
    mean = sum(reward.values()) / len(subsets)
    std = math.sqrt(sum((r - mean) ** 2 for r in reward.values()) / len(subsets))
    return [
        (sum(reward[s] for s in subsets if i in s) / sum(1 for s in subsets if i in s) - mean) / (std + 1e-6)
        for i in range(N)
    ]


@pytest.mark.parametrize("N,k", [(4, 2), (6, 3), (8, 4), (5, 5)])
def test_passk_analytic_matches_subset_enumeration(N, k):
    for n_pos in range(N + 1):
        correct = [1.0] * n_pos + [0.0] * (N - n_pos)
        b = make_batch([2] * N, correct, [0] * N)
        algo("passk", group_size=N, k=k).compute_advantages(b)
        close(b.advantages[:, 0], subset_enumeration_passk(correct, k), atol=1e-6)


def test_passk_max_by_hand_and_verl_loop():
    # rewards [0.5, 1.0, 0.2]: only the best (index 1) gets r_max - r_second = 0.5, over the Bessel std:
    # mean 0.5667, ss = 0.0044 + 0.1878 + 0.1344 = 0.32667, var 0.16333, std 0.404145 -> 1.2371791
    b = make_batch([1, 2, 1], [0.5, 1.0, 0.2], [0, 0, 0])
    algo("passk", estimator="max").compute_advantages(b)
    std = math.sqrt(((0.5 - 1.7 / 3) ** 2 + (1.0 - 1.7 / 3) ** 2 + (0.2 - 1.7 / 3) ** 2) / 2)
    close(b.advantages[:, 0], [0.0, 0.5 / (std + 1e-6), 0.0])
    b = make_batch([1, 2, 1], [0.5, 1.0, 0.2], [0, 0, 0])
    algo("passk", estimator="max", norm_by_std=False).compute_advantages(b)
    close(b.advantages[:, 0], [0.0, 0.5, 0.0])
    # verl's loop (torch.topk per group) on random groups
    g = torch.Generator().manual_seed(5)
    rewards = torch.rand(12, generator=g)
    group = [i // 4 for i in range(12)]
    b = make_batch([2] * 12, rewards.tolist(), group)
    algo("passk", group_size=4, estimator="max").compute_advantages(b)
    expected = torch.zeros(12)
    for gi in range(3):
        r = rewards[gi * 4 : gi * 4 + 4]
        top, idx = torch.topk(r, 2)
        expected[gi * 4 + int(idx[0])] = (top[0] - top[1]) / (torch.std(r) + 1e-6)
    close(b.advantages[:, 0], expected, atol=1e-6)


def test_passk_refuses_what_it_cannot_train_on():
    b = make_batch([1] * 4, [1, 0.5, 0, 0], [0] * 4)
    with pytest.raises(ValueError, match="exactly 0 or 1, got 0.5"):
        algo("passk", group_size=4).compute_advantages(b)
    with pytest.raises(ConfigError, match=r"rollout.n >= 4"):
        algo("passk", group_size=3, k=4)
    with pytest.raises(ConfigError, match="kl_in: loss"):
        algo("passk", group_size=4, kl_coef=0.1, kl_in="reward")


# ----------------------------------------------------------------------------- two steps on the tiny model


def _recipes():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "recipes" / "tiny"


RECIPES = {  # recipe: a metric only that method logs (None: none of its own)
    "gspo": "seq_ratio_mean",
    "cispo": "clip_frac",
    "clip_cov": "clip_cov_frac",
    "kl_cov": "kl_cov_frac",
    "gmpo": "clip_frac_high",
    "gpg": "gpg_alpha",
    "opo": None,
    "passk": None,
    "passk_max": None,
}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_trains_two_steps_on_the_tiny_model(recipe, tmp_path, tiny_model_path):
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    overrides = [
        f"output_dir={tmp_path / 'run'}",
        "train.steps=2",
        "train.prompts_per_step=8",
        "eval.before=false",
        "eval.after=false",
        "eval.full=false",
        "checkpoint.every=0",
        "tracking.progress=false",
    ]
    cfg = load_config(_recipes() / f"{recipe}.yaml", overrides)
    trainer = Trainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
    if RECIPES[recipe]:
        assert RECIPES[recipe] in rows[0]
    after = dict(trainer.policy.named_parameters())
    assert any(not torch.equal(before[n], after[n].detach()) for n in before), f"{recipe}: no parameter moved"
