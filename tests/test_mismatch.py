"""The rollout/training mismatch (rlvr/mismatch.py): the logged log-prob gap, and the truncated
importance-sampling correction (rollout.is_correction: token_tis) checked by hand, against a
plain-loop reference that weights each token's policy-gradient loss (every algorithm), and through
the trainer's own update. No vLLM needed: the batches carry hand-set `rollout_logprobs`."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import helpers
from rlvr.algorithms import build_algorithm, registered_algorithms
from rlvr.batch import RolloutBatch
from rlvr.config import ConfigError, RolloutConfig, load_config
from rlvr.errors import RunError
from rlvr.mismatch import apply_is_correction, rollout_mismatch, token_tis_weights
from rlvr.tasks import Problem


def make_batch(lengths, rewards, group, R=None, P=2, **fields) -> RolloutBatch:
    extras = {k: fields.pop(k) for k in ("greedy_rewards", "values") if k in fields}
    B, R = len(lengths), R or max(lengths)
    mask = (torch.arange(R)[None, :] < torch.tensor(lengths)[:, None]).float()  # [B, R]
    return RolloutBatch(
        input_ids=torch.full((B, P + R), 5, dtype=torch.long),
        attention_mask=torch.cat([torch.ones(B, P, dtype=torch.long), mask.long()], 1),
        response_mask=mask,
        prompt_len=P,
        group=torch.tensor(group, dtype=torch.long),
        problems=[Problem(prompt=f"p{g}", answer="0") for g in group],
        completions=["x" * n for n in lengths],
        truncated=torch.tensor([n == R for n in lengths]),
        rewards=torch.tensor(rewards, dtype=torch.float32),
        extras=extras,
        **fields,
    )


def tis(cap=2.0) -> RolloutConfig:
    return RolloutConfig(engine="vllm", is_correction="token_tis", is_cap=cap)


# ------------------------------------------------------------ the gap and the weights, by hand


def test_gap_is_over_response_tokens_only_and_absent_without_engine_logprobs():
    b = make_batch([2, 1], [1.0, 0.0], [0, 0], R=3)
    b.old_logprobs = torch.tensor([[-1.1, -2.0, -9.0], [-0.2, -9.0, -9.0]])
    assert rollout_mismatch(b) == {}  # hf: no engine log-probs, no metric
    b.rollout_logprobs = torch.tensor([[-1.0, -2.5, 0.0], [-0.5, 0.0, 0.0]])  # padding differs wildly: ignored
    m = rollout_mismatch(b)
    assert m["rollout/logprob_gap_mean"] == pytest.approx((0.1 + 0.5 + 0.3) / 3)
    assert m["rollout/logprob_gap_max"] == pytest.approx(0.5)


def test_token_tis_weights_by_hand():
    old = torch.tensor([[-1.0, -2.0, -0.5, -3.0, -1.0], [-1.0, -60.0, -0.1, -0.1, -0.1]])
    roll = torch.tensor([[-1.5, -1.0, -0.5, -3.7, -9.0], [-51.0, -1.0, -0.1, -0.1, -0.1]])
    mask = torch.tensor([[1.0, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    w = token_tis_weights(old, roll, mask, cap=2.0)
    # diffs old - roll: 0.5, -1, 0, 0.7 (e^0.7 = 2.01 > 2: capped), padding; 50 (bounded to 20, capped), -59 (-> -20)
    expected = [[math.exp(0.5), math.exp(-1.0), 1.0, 2.0, 0.0], [2.0, math.exp(-20.0), 0.0, 0.0, 0.0]]
    torch.testing.assert_close(w.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)
    assert float(w[1, 1]) > 0  # never 0 on a response token: the per-token weighting stays exact
    torch.testing.assert_close(
        token_tis_weights(old, roll, mask, cap=1.5)[0, :2].double(),
        torch.tensor([1.5, math.exp(-1.0)], dtype=torch.float64),
    )
    assert not token_tis_weights(old.requires_grad_(), roll, mask, 2.0).requires_grad  # detached


def test_apply_is_correction_scales_advantages_and_logs_weight_stats():
    b = make_batch([3, 1], [1.0, 0.0], [0, 0], R=3)
    b.old_logprobs = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 0.0, 0.0]])
    b.rollout_logprobs = torch.tensor([[-1.0, -2.0, -1.0 + math.log(4)], [-1.5, 0.0, 0.0]])
    b.advantages = torch.tensor([[1.0, 1.0, 1.0], [-2.0, 0.0, 0.0]])
    before = b.advantages.clone()
    apply_is_correction(b, RolloutConfig(engine="vllm"))  # is_correction: none (the default)
    assert torch.equal(b.advantages, before) and not b.metrics
    apply_is_correction(b, tis())
    w = [1.0, 2.0, 0.25, math.exp(0.5)]  # e^1 = 2.72 capped to 2
    torch.testing.assert_close(
        b.advantages, torch.tensor([[w[0], w[1], w[2]], [-2.0 * w[3], 0.0, 0.0]]), rtol=1e-6, atol=0
    )
    assert b.metrics["rollout/is_weight_mean"] == pytest.approx(sum(w) / 4)
    assert b.metrics["rollout/is_weight_max"] == pytest.approx(2.0)
    assert b.metrics["rollout/is_capped_frac"] == pytest.approx(0.25)


def test_correction_without_engine_logprobs_is_one_line():
    b = make_batch([2], [1.0], [0])
    b.old_logprobs, b.advantages = torch.zeros(1, 2), torch.ones(1, 2)
    with pytest.raises(RunError, match="rollout.is_correction=token_tis needs the rollout engine's log-probs"):
        apply_is_correction(b, RolloutConfig(is_correction="token_tis"))


def test_config_refuses_token_tis_with_the_hf_engine_and_a_bad_cap(tmp_path):
    cfg = helpers.write_config(tmp_path / "c.yaml", rollout={"is_correction": "token_tis"})
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "rollout.is_correction: token_tis needs the rollout engine's own log-probs" in msg
    assert "rollout.engine=hf" in msg
    with pytest.raises(ConfigError, match="rollout.is_cap"):
        load_config(helpers.write_config(tmp_path / "d.yaml", rollout={"is_cap": 0}))
    with pytest.raises(ConfigError, match="rollout.is_correction"):
        load_config(helpers.write_config(tmp_path / "e.yaml", rollout={"is_correction": "sequence"}))
    assert load_config(helpers.write_config(tmp_path / "f.yaml")).rollout.is_correction == "none"


# ------------------------------------------------------------ exactness against a plain-loop reference

LENGTHS, REWARDS, GROUP = [4, 2, 3, 1, 4, 3], [1.0, 0.0, 0.5, 0.0, 1.0, 0.5], [0, 0, 0, 1, 1, 1]
OPTIONS = {  # each algorithm with the loss terms the weighting must leave alone switched on
    "grpo": dict(kl_coef=0.1, kl_in="loss", entropy_coef=0.01),
    "dapo": dict(entropy_coef=0.01),
    "rloo": dict(kl_coef=0.1, kl_in="loss", loss_agg="seq-mean-token-sum"),
    "reinforce_pp": dict(kl_coef=0.05, kl_in="reward", loss_agg="seq-mean-token-sum-norm"),
    "remax": dict(),
    "ppo": dict(value_clip=0.1, vf_coef=0.5),
    "gpg": dict(
        policy_loss="ppo"
    ),  # the reference below is the PPO-clipped loss; GPG's own loss: test_algorithms_extra
    "opo": dict(),
    "passk": dict(estimator="max"),
}


def random_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    B, R = len(LENGTHS), max(LENGTHS)
    old = -torch.rand(B, R, generator=g) * 3 - 0.1
    rollout = old + 0.6 * torch.randn(B, R, generator=g)  # ratios from ~0.2 to ~5: some capped at 2
    new = old + 0.3 * torch.randn(B, R, generator=g)  # the policy now: ratios outside the clip range
    fields = dict(
        values=torch.randn(B, R, generator=g),
        greedy_rewards=torch.rand(B, generator=g),
        ref_logprobs=old + 0.2 * torch.randn(B, R, generator=g),
    )
    b = make_batch(LENGTHS, REWARDS, GROUP, **fields)
    b.old_logprobs, b.rollout_logprobs = old, rollout * b.response_mask
    b.global_tokens, b.global_seqs = float(b.response_mask.sum()), float(B)
    return b, new, torch.rand(B, R, generator=g) + 0.5, torch.randn(B, R, generator=g)  # + entropy, new values


def reference_loss(algo, b, adv, returns, w, lp, ent, values):
    """The loss with each token's policy-gradient term multiplied by w, written as loops over
    tokens: clipped surrogate, dual clip, aggregation, KL, entropy and PPO's value loss from their
    textbook definitions; `adv` and `returns` are the algorithm's own, uncorrected."""
    c = algo.config
    mask = b.response_mask.tolist()
    B, R = len(mask), len(mask[0])
    is_ppo = c.name == "ppo"

    def agg(term):  # term(i, t) -> 0-dim tensor
        rows = [[term(i, t) for t in range(R) if mask[i][t]] for i in range(B)]
        sums = [sum(r, torch.zeros((), dtype=torch.float64)) for r in rows]
        if c.loss_agg == "token-mean":
            return sum(sums) / b.global_tokens
        if c.loss_agg == "seq-mean-token-mean":
            return sum(s / len(r) for s, r in zip(sums, rows, strict=True) if r) / b.global_seqs
        if c.loss_agg == "seq-mean-token-sum":
            return sum(sums) / b.global_seqs
        return sum(sums) / (b.global_seqs * algo.norm_constant)

    def pg(i, t):
        a, ratio = float(adv[i, t]), torch.exp(lp[i, t] - float(b.old_logprobs[i, t]))
        loss = torch.maximum(-a * ratio, -a * ratio.clamp(1 - c.clip_low, 1 + c.clip_high))
        if a < 0 and c.clip_c is not None:
            loss = torch.minimum(loss, torch.tensor(-a * c.clip_c, dtype=torch.float64))
        return float(w[i, t]) * loss

    loss = agg(pg)
    if c.kl_coef > 0 and c.kl_in == "loss":  # k3: exp(ref - lp) - (ref - lp) - 1, unweighted
        d = lambda i, t: float(b.ref_logprobs[i, t]) - lp[i, t]  # noqa: E731
        loss = loss + c.kl_coef * agg(lambda i, t: torch.exp(d(i, t)) - d(i, t) - 1)
    if c.entropy_coef > 0:
        loss = loss - c.entropy_coef * agg(lambda i, t: ent[i, t])
    if is_ppo:

        def vf(i, t):
            v, old, ret = values[i, t], float(b.extras["values"][i, t]), float(returns[i, t])
            clipped = v.clamp(old - c.value_clip, old + c.value_clip)
            return 0.5 * torch.maximum((v - ret) ** 2, (clipped - ret) ** 2)

        loss = loss + c.vf_coef * agg(vf)
    return loss


@pytest.mark.parametrize("name", sorted(OPTIONS))
@pytest.mark.parametrize("seed", [0, 1])
def test_corrected_loss_gradient_equals_per_token_weighted_reference(name, seed):
    # distill has no ratio to weight: it refuses rollout.is_correction (tests/test_distill.py)
    assert set(OPTIONS) | {"distill"} == set(registered_algorithms()), "a new algorithm: add it here"
    algo = build_algorithm({"name": name, **OPTIONS[name]}, max_new_tokens=4, group_size=3)
    b, new, ent, new_values = random_case(seed)
    plain = copy.deepcopy(b)
    algo.compute_advantages(plain)  # the uncorrected advantages and returns
    corrected = copy.deepcopy(b)
    copy.deepcopy(algo).compute_advantages(corrected)  # a copy: the adaptive KL state must not move twice
    apply_is_correction(corrected, tis())
    if name == "ppo":
        assert torch.equal(corrected.returns, plain.returns), "the critic's targets are not weighted"
    mask = b.response_mask.tolist()  # the weights, token by token from the definition (not token_tis_weights)
    w = torch.tensor(
        [
            [min(math.exp(float(o) - float(r)), 2.0) if k else 0.0 for o, r, k in zip(*row, strict=True)]
            for row in zip(b.old_logprobs, b.rollout_logprobs, mask, strict=True)
        ],
        dtype=torch.float64,
    )
    m = b.response_mask.bool()
    assert (w[m] == 2.0).any() and (w[m] < 0.5).any(), "the case must exercise the cap and small weights"

    def grads(loss_fn):
        lp = new.double().clone().requires_grad_()
        en = ent.double().clone().requires_grad_()
        vals = new_values.double().clone().requires_grad_()
        loss = loss_fn(lp, en, vals)
        loss.backward()
        return loss.detach(), lp.grad, en.grad, vals.grad

    def ours(lp, en, vals):
        d = copy.deepcopy(corrected)
        for f in ("old_logprobs", "advantages", "ref_logprobs", "returns"):
            if getattr(d, f) is not None:
                setattr(d, f, getattr(d, f).double())
        d.extras = {k: v.double() for k, v in d.extras.items()}
        extra = {"values": vals} if name == "ppo" else {}
        return algo.compute_loss(d, lp, entropy=en, **extra)[0]

    got = grads(ours)
    ref = grads(lambda lp, en, vals: reference_loss(algo, b, plain.advantages, plain.returns, w, lp, en, vals))
    unweighted = grads(
        lambda lp, en, vals: reference_loss(algo, b, plain.advantages, plain.returns, torch.ones_like(w), lp, en, vals)
    )
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-7)
    for i, what in ((1, "logprobs"), (2, "entropy"), (3, "values")):
        if ref[i] is not None or got[i] is not None:
            torch.testing.assert_close(
                got[i], ref[i], rtol=1e-5, atol=1e-7, msg=lambda s, what=what: f"{name} d/d{what}: {s}"
            )
    assert not torch.allclose(ref[1], unweighted[1], atol=1e-4), "the weighting must change the gradient"


# ------------------------------------------------------------ through the trainer


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return helpers.make_random_model(tmp_path_factory.mktemp("model") / "m")


def _grads_and_metrics(tmp_path, model, correction: str, shift: float | None):
    """One trainer update on a fixed 2-prompt x 4-sample batch; rollout log-probs = the trainer's
    own recomputed ones - `shift` (so every weight is exp(shift)), or none."""
    from one_step import capture_grads
    from rlvr.rollout import HFEngine, Sampling
    from rlvr.tasks import reasoning_gym_problems
    from rlvr.trainer import Trainer

    cfg = load_config(helpers.write_config(tmp_path / f"{correction}.yaml", model, train={"prompts_per_step": 2}))
    cfg.rollout.is_correction = correction  # past check_run, which refuses hf: the engine is faked below
    trainer = Trainer(cfg, reward_fn=lambda p, c: [len(set(x)) / 8.0 for x in c])
    torch.manual_seed(0)
    problems = reasoning_gym_problems(helpers.TASK["task"], helpers.TASK["task_config"], "train", 2, 0)
    model_ = trainer.accelerator.unwrap_model(trainer.policy)
    batch = HFEngine(model_, trainer.tokenizer).generate(problems, 4, Sampling(max_new_tokens=6))
    batch.rewards = torch.tensor([len(set(x)) / 8.0 for x in batch.completions])
    if shift is not None:
        batch.rollout_logprobs = (trainer.logprobs(trainer.policy, batch) - shift) * batch.response_mask
    captured: dict = {}
    capture_grads(trainer, captured)
    metrics = trainer.train_on(batch)
    return captured, {**metrics, **batch.metrics}


def test_trainer_logs_the_gap_and_weights_the_update(tmp_path, random_model):
    """On-policy first step (ratio 1): with every weight exp(-ln 2) = 1/2 and no KL or entropy term, the
    policy's gradient is exactly half the uncorrected one; the gap and weight metrics are logged."""
    plain, m0 = _grads_and_metrics(tmp_path, random_model, "none", None)
    assert not any(k.startswith("rollout/") for k in m0)
    half, m1 = _grads_and_metrics(tmp_path, random_model, "token_tis", -math.log(2))
    assert m1["rollout/logprob_gap_mean"] == pytest.approx(math.log(2), rel=1e-5)
    assert m1["rollout/logprob_gap_max"] == pytest.approx(math.log(2), rel=1e-5)
    assert m1["rollout/is_weight_mean"] == pytest.approx(0.5, rel=1e-5) and m1["rollout/is_capped_frac"] == 0
    nonzero = 0
    for name, g in plain.items():
        torch.testing.assert_close(half[name], 0.5 * g, rtol=1e-4, atol=1e-8, msg=lambda s, n=name: f"{n}: {s}")
        nonzero += int(g.abs().sum() > 0)
    assert nonzero > len(plain) // 2, "mostly zero gradients prove nothing"
