"""The algorithm seam (issue 9): a method that needs an extra model and an extra sampling pass
is one file, here this test file, and trains with no trainer edit; an algorithm's own state
is checkpointed; the trainer names no algorithm's feature.

`ColdBaseline` below is defined only here. Its baseline for a sample's prompt is the mean of

  - the rewards of `cold_n` extra samples of the prompt drawn at `cold_temperature` (an extra
    sampling pass through the trainer's engine and reward, never trained on), and
  - a learned per-prompt value V(prompt) (an extra model with its own optimizer, prepared,
    stepped, clipped and checkpointed by the trainer, fitted to the rewards in the loss):

    A_i = R_i - (mean_j R(cold_ij) + V_old(prompt_i)) / 2,
    loss = PPO-clipped policy loss + coef * sum_i (V(prompt_i) - R_i)^2 / global_seqs.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from pydantic import Field

import helpers
from helpers import make_random_model
from rlvr.algorithms import Algorithm, AlgorithmConfig

ROOT = Path(__file__).resolve().parents[1]
N, K, COLD_N = 4, 4, 2  # rollout.n, train.prompts_per_step, cold samples per prompt


class PromptValue(torch.nn.Module):
    """V(prompt): the mean of a learned scalar per token over the prompt's tokens. [B]"""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab_size, 1)
        torch.nn.init.zeros_(self.emb.weight)

    def forward(self, batch) -> torch.Tensor:
        P = batch.prompt_len
        mask = batch.attention_mask[:, :P].float()
        return (self.emb(batch.input_ids[:, :P])[..., 0] * mask).sum(-1) / mask.sum(-1)


class ColdBaselineConfig(AlgorithmConfig):
    cold_temperature: float = Field(0.5, gt=0, description="temperature of the extra samples")
    cold_n: int = Field(COLD_N, ge=1, description="extra samples per prompt")
    value_lr: float = Field(1e-2, gt=0, description="learning rate of V")
    value_coef: float = Field(1.0, ge=0, description="weight of V's squared error in the loss")


class ColdBaseline(Algorithm):
    Config = ColdBaselineConfig

    def setup(self, trainer) -> None:
        super().setup(trainer)
        vocab = trainer.accelerator.unwrap_model(trainer.policy).config.vocab_size
        self.value = trainer.prepare_model(PromptValue(vocab), lr=self.config.value_lr)
        self.cold_samples = 0  # its own state, checkpointed
        self.scored: list[int] = []
        self.trained_on: list[int] = []

    def after_scoring(self, batch) -> None:
        super().after_scoring(batch)
        self.scored.append(len(batch))

    def after_rollout(self, batch, trainer) -> None:
        n, m = trainer.cfg.rollout.n, self.config.cold_n
        sampling = trainer.sampling()
        sampling.temperature = self.config.cold_temperature
        cold = trainer.rollout(batch.problems[::n], m, sampling)
        trainer.score(cold)
        self.cold_samples += len(cold)
        batch.extras["cold_mean"] = cold.rewards.view(-1, m).mean(-1).repeat_interleave(n).to(batch.rewards.device)

    def after_logprobs(self, batch, trainer) -> None:
        super().after_logprobs(batch, trainer)
        batch.extras["v_old"] = trainer.forward(self.value, batch)  # [B], no grad

    def compute_advantages(self, batch) -> None:
        self.trained_on.append(len(batch))
        baseline = (batch.extras["cold_mean"] + batch.extras["v_old"]) / 2
        batch.advantages = (batch.rewards - baseline)[:, None] * batch.response_mask

    def forward_extras(self, micro) -> dict[str, torch.Tensor]:
        return {"v": self.value(micro)}  # [B], with grad

    def compute_loss(self, batch, logprobs, entropy=None, v=None):
        loss, metrics = super().compute_loss(batch, logprobs, entropy=entropy)
        v_loss = (v - batch.rewards).square().sum() / batch.global_seqs
        metrics["value_loss"] = v_loss.detach()
        return loss + self.config.value_coef * v_loss, metrics

    def state_dict(self) -> dict:
        return {**super().state_dict(), "cold_samples": self.cold_samples}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.cold_samples = state["cold_samples"]


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return make_random_model(tmp_path_factory.mktemp("model") / "m")


def hashed_reward(problems, completions):
    # differs between any two different (prompt, completion) pairs: every baseline is informative
    return [
        int(hashlib.sha256((p.prompt + "|" + c).encode()).hexdigest()[:8], 16) / 2**32
        for p, c in zip(problems, completions, strict=True)
    ]


def make_trainer(path: Path, model: Path, **sections):
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    base = {"rollout": {"n": N, "max_new_tokens": 6}, "train": {"prompts_per_step": K}}
    return Trainer(load_config(helpers.write_config(path, model, base, **sections)), reward_fn=hashed_reward)


def test_an_algorithm_with_an_extra_model_and_an_extra_sampling_pass_trains(tmp_path, random_model):
    from transformers import AutoModelForCausalLM

    trainer = make_trainer(
        tmp_path / "c.yaml",
        random_model,
        algorithm={"name": f"{__name__}:ColdBaseline"},
        train={"steps": 2, "prompts_per_step": K, "grad_clip": 1.0},
        checkpoint={"every": 1},
    )
    algo = trainer.algorithm
    assert isinstance(algo, ColdBaseline) and algo.value in trainer.trained and len(trainer.optimizers) == 2
    trainer.fit()

    # each step: the samples scored, then the cold pass (cold_n per prompt), which is never trained on
    assert algo.scored == [K * N, K * COLD_N] * 2
    assert algo.trained_on == [K * N] * 2 and algo.cold_samples == 2 * K * COLD_N
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["value_loss"] > 0 for r in rows)
    # every policy parameter moved
    before = dict(AutoModelForCausalLM.from_pretrained(random_model).named_parameters())
    after = dict(AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final").named_parameters())
    assert [n for n, p in before.items() if torch.equal(p, after[n])] == []
    # the extra model was trained: its optimizer stepped it away from zero
    assert trainer.accelerator.unwrap_model(algo.value).emb.weight.abs().sum() > 0
    # the step-1 checkpoint holds the extra model, its optimizer and the algorithm's own state
    ckpt = tmp_path / "run" / "checkpoints" / "step-1"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["algorithm"] == {"kl_coef": 0.0, "cold_samples": K * COLD_N}
    assert len(state["schedulers"]) == 2
    assert len([f for f in ckpt.iterdir() if f.name.startswith("optimizer")]) == 2


def test_resumed_run_continues_with_the_saved_adaptive_kl_coefficient(tmp_path, random_model):
    """GRPO with the KL in the reward and the adaptive controller: the coefficient moves every
    step. 4 steps in one go vs. 3 steps (last checkpoint at 2) then resumed to 4: the resumed run's
    steps 3 and 4 use the coefficient the checkpoint saved, not the initial one."""
    algorithm = {"name": "grpo", "kl_coef": 0.1, "kl_in": "reward", "kl_target": 0.001, "kl_horizon": 16}

    def run(name: str, steps: int) -> list[dict]:
        trainer = make_trainer(
            tmp_path / name / "c.yaml",
            random_model,
            algorithm=algorithm,
            train={"steps": steps, "prompts_per_step": K},
            checkpoint={"every": 2},
        )
        trainer.fit()
        return [json.loads(line) for line in (tmp_path / name / "run" / "metrics.jsonl").read_text().splitlines()]

    whole = run("whole", 4)
    coefs = [r["kl_coef"] for r in whole]
    assert coefs[0] == 0.1 and len(set(coefs)) == 4, coefs  # the controller moved it every step
    run("resumed", 3)
    state = json.loads((tmp_path / "resumed" / "run" / "checkpoints" / "step-2" / "trainer_state.json").read_text())
    assert state["algorithm"]["kl_coef"] == pytest.approx(coefs[2], rel=1e-6)
    resumed = run("resumed", 4)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert [r["kl_coef"] for r in resumed] == pytest.approx(coefs, rel=1e-6)
    assert resumed[2]["kl_coef"] != 0.1


def trainer_source_without_eval() -> str:
    """rlvr/trainer.py without the eval methods (another seam's)."""
    src = (ROOT / "rlvr" / "trainer.py").read_text()
    return re.sub(
        r"\n    def (eval_spec|eval_settings|evaluate|full_eval|gather_rows)\(.*?(?=\n    (?:def |@|# -)|\Z)",
        "",
        src,
        flags=re.S,
    )


def test_the_trainer_names_no_algorithms_feature():
    """No critic, greedy sample, dynamic sampling, entropy switch, KL coefficient or overlong
    shaping in the trainer: those live in algorithms/ behind the hooks."""
    src = trainer_source_without_eval().lower()
    for word in (
        "critic",
        "greedy",
        "dynamic sampling",
        "entropy_coef",
        "kl_coef",
        "overlong",
        "needs_reference",
        "ref_logprobs",
        "batch.values",
        "remax",
        "dapo",
        "ppo",
        "grpo",
    ):
        assert word not in src, word


def test_batch_extras_ride_along_through_select_to_and_concat():
    from rlvr.batch import RolloutBatch, concat_batches
    from rlvr.tasks import Problem

    def batch(R: int, extra: torch.Tensor) -> RolloutBatch:
        B = len(extra)
        return RolloutBatch(
            input_ids=torch.ones(B, 2 + R, dtype=torch.long),
            attention_mask=torch.ones(B, 2 + R, dtype=torch.long),
            response_mask=torch.ones(B, R),
            prompt_len=2,
            group=torch.arange(B),
            problems=[Problem(prompt=str(i), answer="") for i in range(B)],
            completions=[""] * B,
            truncated=torch.zeros(B, dtype=torch.bool),
            extras={"b": extra},
        )

    a, b = batch(3, torch.tensor([1.0, 2.0, 3.0])), batch(5, torch.tensor([4.0, 5.0]))
    assert a.select([2, 0]).extras["b"].tolist() == [3.0, 1.0]
    assert a.to("cpu").extras["b"].tolist() == [1.0, 2.0, 3.0]
    joined = concat_batches([a, b], pad_id=0)
    assert joined.extras["b"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0] and joined.response_mask.shape == (5, 5)
    with pytest.raises(ValueError, match="extra 'b'"):
        concat_batches([a, batch(3, torch.ones(2, 3))], pad_id=0)
