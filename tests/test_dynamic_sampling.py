"""Dynamic sampling (DAPO) and the greedy baseline (ReMax) through the real Trainer's
collect() on a random model, with handcrafted rewards that decide which prompt groups
are constant. The trainer is observed through the algorithm's hooks (a subclass that
notes every batch scored), not by replacing its methods."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

import helpers
from helpers import make_random_model
from rlvr.algorithms import DAPO, ReMax

TASK = helpers.TASK
N = 4  # rollout.n
K = 4  # train.prompts_per_step


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return make_random_model(tmp_path_factory.mktemp("model") / "m")


def write_config(path: Path, model: Path, **sections) -> Path:
    return helpers.write_config(
        path,
        model,
        {"algorithm": {"name": "dapo"}, "rollout": {"n": N}, "train": {"steps": 1, "prompts_per_step": K}},
        **sections,
    )


class Recording:
    """Notes the size of every batch the trainer scores, through the after_scoring hook: each
    generation round, then each extra sampling pass."""

    def after_scoring(self, batch):
        super().after_scoring(batch)
        self.__dict__.setdefault("scored", []).append(len(batch))


class RecordingDAPO(Recording, DAPO):
    pass


class RecordingReMax(Recording, ReMax):
    pass


def make_trainer(tmp_path, model, reward_fn, name="dapo", **options):
    """A Trainer running the Recording subclass of `name`: `trainer.algorithm.scored`."""
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    cls = {"dapo": RecordingDAPO, "remax": RecordingReMax}[name]
    algorithm = {"name": f"{__name__}:{cls.__name__}", **options}
    trainer = Trainer(load_config(write_config(tmp_path / "c.yaml", model, algorithm=algorithm)), reward_fn=reward_fn)
    trainer.algorithm.scored = []
    return trainer


def rounds(trainer) -> int:
    """Generation rounds so far: every scored batch is one round of K / processes prompts x N."""
    assert set(trainer.algorithm.scored) <= {K * N}
    return len(trainer.algorithm.scored)


def h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)  # stable across processes, unlike hash()


def completion_reward(c: str) -> float:
    return h(c) / 2**32  # differs between any two different completions


def groups_of(batch) -> list[list[int]]:
    return [list(range(g * N, (g + 1) * N)) for g in range(len(batch) // N)]


def assert_well_formed_groups(batch) -> None:
    """Each block of N consecutive samples is one prompt with one group id; ids differ between groups."""
    assert len(batch) % N == 0
    ids = []
    for rows in groups_of(batch):
        assert len({batch.problems[i].prompt for i in rows}) == 1
        assert len({int(batch.group[i]) for i in rows}) == 1
        ids.append(int(batch.group[rows[0]]))
    assert len(set(ids)) == len(ids)


def test_dapo_refills_until_prompts_per_step_groups_are_kept(tmp_path, random_model):
    const = {}

    def reward(problems, completions):
        # whole groups are constant (0.0) for one prompt-hash parity; the others vary per completion
        return [
            0.0 if h(p.prompt) % 2 == const["parity"] else completion_reward(c)
            for p, c in zip(problems, completions, strict=True)
        ]

    trainer = make_trainer(tmp_path, random_model, reward)
    # make round 0 hold at least one constant group, so one round cannot be enough
    const["parity"] = h(trainer.step_problems(0, 0)[0].prompt) % 2
    batch, metrics = trainer.collect(0)

    assert len(batch) == K * N
    assert metrics["sampling/rounds"] == rounds(trainer) > 1
    assert metrics["sampling/shortfall"] == 0
    assert metrics["sampling/groups_kept_frac"] < 1
    assert_well_formed_groups(batch)
    for rows in groups_of(batch):
        r = batch.rewards[rows]
        assert (r != r[0]).any(), "a constant group was kept"
        assert h(batch.problems[rows[0]].prompt) % 2 != const["parity"]
    # the joined batch (rounds of different widths) trains
    out = trainer.train_on(batch)
    assert torch.isfinite(torch.tensor(out["loss"]))


def test_dapo_constant_rewards_raise_after_max_gen_batches(tmp_path, random_model):
    constant = lambda problems, completions: [1.0] * len(completions)
    trainer = make_trainer(tmp_path, random_model, constant, max_gen_batches=3, on_shortfall="raise")
    with pytest.raises(RuntimeError):
        trainer.collect(0)
    assert rounds(trainer) == 3  # exactly max_gen_batches rounds, then stop


def test_dapo_constant_rewards_on_shortfall_raise_names_max_gen_batches(tmp_path, random_model):
    constant = lambda problems, completions: [1.0] * len(completions)
    trainer = make_trainer(tmp_path, random_model, constant, max_gen_batches=3, on_shortfall="raise")
    with pytest.raises(RuntimeError, match="max_gen_batches"):
        trainer.collect(0)


def test_dapo_constant_rewards_on_shortfall_train_has_nothing_to_train_on(tmp_path, random_model):
    constant = lambda problems, completions: [0.5] * len(completions)
    trainer = make_trainer(tmp_path, random_model, constant, max_gen_batches=2, on_shortfall="train")
    with pytest.raises(RuntimeError, match="no prompt group was kept"):
        trainer.collect(0)
    assert rounds(trainer) == 2


@pytest.mark.parametrize("on_shortfall", ["train", "raise"])
def test_dapo_shortfall_when_few_groups_ever_vary(tmp_path, random_model, on_shortfall):
    varying: set[str] = set()

    def reward(problems, completions):
        return [
            completion_reward(c) if p.prompt in varying else 1.0 for p, c in zip(problems, completions, strict=True)
        ]

    trainer = make_trainer(tmp_path, random_model, reward, max_gen_batches=3, on_shortfall=on_shortfall)
    only = trainer.step_problems(0, 0)[0].prompt
    varying.add(only)  # one prompt of the 16 varies; it is drawn in round 0, maybe again later
    if on_shortfall == "raise":
        with pytest.raises(RuntimeError, match="max_gen_batches"):
            trainer.collect(0)
        assert rounds(trainer) == 3
        return
    batch, metrics = trainer.collect(0)
    assert rounds(trainer) == 3
    kept = len(batch) // N
    assert 1 <= kept < K and len(batch) == kept * N
    assert metrics["sampling/shortfall"] == K - kept > 0
    assert metrics["sampling/rounds"] == 3
    assert metrics["sampling/groups_kept_frac"] == pytest.approx(kept / (3 * K))
    assert_well_formed_groups(batch)
    for rows in groups_of(batch):
        assert batch.problems[rows[0]].prompt == only
        assert (batch.rewards[rows] != batch.rewards[rows[0]]).any()
    out = trainer.train_on(batch)  # trains on what there is
    assert torch.isfinite(torch.tensor(out["loss"]))


def test_remax_greedy_baseline_is_one_greedy_decode_per_prompt(tmp_path, random_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    calls = []

    def reward(problems, completions):
        # depends on the prompt too: a random model's greedy output may be the same for every prompt
        calls.append(len(completions))
        return [completion_reward(p.prompt + "|" + c) for p, c in zip(problems, completions, strict=True)]

    trainer = make_trainer(tmp_path, random_model, reward, name="remax")
    batch, _ = trainer.collect(0)

    assert len(batch) == K * N and len(batch.completions) == K * N  # greedy responses are not samples
    assert batch.response_mask.shape[0] == K * N and batch.rewards.shape == (K * N,)
    assert trainer.algorithm.scored == calls == [K * N, K]  # one round of samples, then one greedy response per prompt
    g = batch.extras["greedy_rewards"]
    assert g.shape == (K * N,)
    per_prompt = g[::N]
    torch.testing.assert_close(g, per_prompt.repeat_interleave(N), rtol=0, atol=0)

    # recompute: greedy decode of each prompt alone (no padding), with the untrained weights
    tok = AutoTokenizer.from_pretrained(random_model)
    model = AutoModelForCausalLM.from_pretrained(random_model).eval()
    problems = batch.problems[::N]
    completions = []
    for p in problems:
        enc = tok(p.prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **enc, do_sample=False, max_new_tokens=6, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
            )
        resp = out[0, enc["input_ids"].shape[1] :].tolist()
        if tok.eos_token_id in resp:
            resp = resp[: resp.index(tok.eos_token_id)]
        completions.append(tok.decode(resp, skip_special_tokens=True))
    expected = torch.tensor([completion_reward(p.prompt + "|" + c) for p, c in zip(problems, completions, strict=True)])
    torch.testing.assert_close(per_prompt, expected)
    assert per_prompt.unique().numel() > 1, "greedy rewards all equal: the comparison proves little"
    assert per_prompt.tolist() != batch.rewards[::N].tolist()  # not the first sampled response's reward
    # the advantage uses it: A = R - b on every token of a sample
    trainer.logprob_pass(batch)
    trainer.algorithm.compute_advantages(batch)
    torch.testing.assert_close(batch.advantages[:, 0], batch.rewards - g)
