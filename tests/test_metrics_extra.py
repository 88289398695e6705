"""Metrics a user expects: where a step's time goes (time/*, tokens per second, on the progress bar),
token-weighted update metrics, the critic's grad norm, ReMax's greedy reward, DAPO's overlong penalty,
groups_kept_frac with refill surplus, an eval progress bar in training, and no accelerate line about
tied weights on every checkpoint. On a random model, in process; no timed assertions."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import helpers
from helpers import make_random_model
from rlvr.timing import PHASES, StepTimer

TASK = helpers.TASK
N = 4  # rollout.n


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return make_random_model(tmp_path_factory.mktemp("model") / "m")


@pytest.fixture(scope="module")
def tied_model(tmp_path_factory, random_model):
    """The random model with tied input and output embeddings (as the embedded tiny model and many real ones)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cfg = AutoConfig.from_pretrained(random_model)
    cfg.tie_word_embeddings = True
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    out = tmp_path_factory.mktemp("tied") / "m"
    model.generation_config.pad_token_id = cfg.pad_token_id
    model.generation_config.eos_token_id = cfg.eos_token_id
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(random_model).save_pretrained(out)
    return out


def varied_reward(problems, completions):
    return [len(set(c)) / 8.0 for c in completions]  # spread inside every group


def trainer_for(tmp_path: Path, model: Path, overrides: list[str] = (), reward_fn=varied_reward, **sections):
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    base = {"data": {"train_size": 64, "eval_size": 4}}
    path = helpers.write_config(tmp_path / "c.yaml", model, base, **sections)
    return Trainer(load_config(path, list(overrides)), reward_fn=reward_fn)


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- the timer, on a clock moved by hand


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_timer_phases_are_exclusive_and_sum_to_at_most_the_step():
    clock = Clock()
    timer = StepTimer(clock)
    clock.t += 1  # before any phase: the step's only
    with timer("generate"):
        clock.t += 2
        with timer("reward"):  # inside generate: generate's clock stops
            clock.t += 3
        clock.t += 4
    with timer("update"):
        clock.t += 5
    timer.count_tokens(torch.tensor(60))
    m = timer.metrics()
    assert m["time/generate"] == 6 and m["time/reward"] == 3 and m["time/update"] == 5
    assert m["time/logprobs"] == 0 and m["time/eval"] == 0  # every phase present, 0 when it did not run
    assert m["time/step"] == 15
    assert m["time/tokens_per_s"] == 60 / 15
    timer.start()  # the next step starts from nothing
    clock.t += 2
    with timer("eval"):
        clock.t += 8
    timer.count_tokens(10)
    m = timer.metrics()
    assert m["time/generate"] == 0 and m["time/eval"] == 8 and m["time/step"] == 10
    assert m["time/tokens_per_s"] == 10 / 2  # per second outside the eval


def test_timer_refuses_an_unknown_phase():
    with pytest.raises(ValueError, match="unknown phase 'sampling'"), StepTimer()("sampling"):
        pass


def test_timer_phase_closed_by_an_exception_still_counts():
    clock = Clock()
    timer = StepTimer(clock)
    with pytest.raises(KeyError), timer("logprobs"):
        clock.t += 2
        raise KeyError
    with timer("update"):
        clock.t += 1
    m = timer.metrics()
    assert m["time/logprobs"] == 2 and m["time/update"] == 1 and m["time/step"] == 3


# ---------------------------------------------------------------- a run: time/*, bars, critic, checkpoints


def test_ppo_run_logs_times_critic_grad_norm_eval_bar_and_no_tied_weights_line(tmp_path, tied_model, capsys, caplog):
    """Two PPO steps with an eval and a checkpoint after each: every row has time/<phase> for every phase,
    non-negative and summing to at most time/step; tokens/s on the bar; the eval's own bar; the critic's
    grad norm equal to the norm its optimizer stepped with; no 'Removed shared tensor' warning."""
    trainer = trainer_for(
        tmp_path,
        tied_model,
        ["tracking.progress=true", "train.grad_clip=1e6", "eval.every=1", "train.steps=3", "checkpoint.every=1"],
        algorithm={"name": "ppo"},
        eval={"n": 2, "before": False, "after": False},
    )
    assert trainer.trained_names == ["policy", "critic"]
    seen: list[float] = []  # the critic's gradient norm as its optimizer is about to step (clip 1e6: unclipped)

    def hook(optimizer, args, kwargs):
        grads = [
            p.grad.detach().double() for p in trainer.accelerator.unwrap_model(trainer.algorithm.critic).parameters()
        ]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    getattr(trainer.optimizers[1], "optimizer", trainer.optimizers[1]).register_step_pre_hook(hook)
    with caplog.at_level(logging.WARNING):
        trainer.fit()
    out = rows(tmp_path / "run")
    assert len(out) == 3 and len(seen) == 3
    for r in out:
        times = [r[f"time/{p}"] for p in PHASES]
        assert all(t >= 0 for t in times), r
        assert sum(times) <= r["time/step"] + 1e-3, r
        assert r["time/generate"] > 0 and r["time/update"] > 0 and r["time/logprobs"] > 0
        assert r["time/tokens_per_s"] > 0
    assert out[0]["time/eval"] > 0 and out[1]["time/eval"] > 0  # steps 1 and 2 evaluate; the last does not
    assert out[2]["time/eval"] == 0
    for r, norm in zip(out, seen, strict=True):
        assert r["critic/grad_norm"] == pytest.approx(norm, rel=1e-5)
        assert r["critic/grad_norm"] != pytest.approx(r["grad_norm"], rel=1e-3)  # not the policy's
    err = capsys.readouterr().err
    assert "tok_s=" in err  # the training bar
    assert "eval step-1" in err and "eval step-2" in err  # the in-training evals' bars
    assert (tmp_path / "run" / "checkpoints" / "step-2").is_dir()
    assert not [r for r in caplog.records if "Removed shared tensor" in r.getMessage()]


def test_tied_copies_filter_drops_only_the_tied_names():
    from rlvr.quiet import TiedCopiesFilter

    f = TiedCopiesFilter({"lm_head.weight", "model.embed_tokens.weight"})

    def passes(msg: str) -> bool:
        return f.filter(logging.LogRecord("accelerate.utils.other", logging.WARNING, "", 0, msg, None, None))

    tail = " while saving. This should be OK, but check by verifying that you don't receive any warning while reloading"
    assert not passes("[RANK 0] Removed shared tensor {'lm_head.weight'}" + tail)
    assert not passes("[RANK 1] Removed shared tensor {'module.lm_head.weight'}" + tail)  # a wrapper's prefix
    assert passes("[RANK 0] Removed shared tensor {'lm_head.weight', 'model.norm.weight'}" + tail)  # not tied
    assert passes("[RANK 0] Removed shared tensor {'xlm_head.weight'}" + tail)
    assert passes("something else entirely")


def test_tied_names_are_one_tensor_under_two_names(tied_model, random_model):
    from transformers import AutoModelForCausalLM

    from rlvr.quiet import tied_names

    assert tied_names(AutoModelForCausalLM.from_pretrained(tied_model)) == {
        "lm_head.weight",
        "model.embed_tokens.weight",
    }
    assert tied_names(AutoModelForCausalLM.from_pretrained(random_model)) == set()


# ---------------------------------------------------------------- update metrics weighted by tokens


@pytest.fixture(scope="module")
def ragged_batch(random_model):
    """One prompt x 4 samples with responses of 2..5 tokens and varied rewards."""
    from rlvr.models import load_model_and_tokenizer
    from rlvr.rollout import HFEngine, Sampling, make_batch
    from rlvr.tasks import reasoning_gym_problems

    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(str(random_model))
    problems = reasoning_gym_problems(TASK["task"], TASK["task_config"], "train", 1, 0)
    batch = HFEngine(model, tok).generate(problems, N, Sampling(max_new_tokens=6))
    P, resp = batch.prompt_len, batch.response_ids.clone()
    for i in range(len(resp)):
        resp[i, 1 + i] = tok.eos_token_id
    batch = make_batch(batch.input_ids[:, :P], batch.attention_mask[:, :P], resp, problems, N, tok)
    batch.rewards = torch.tensor([0.0, 1.0, 0.25, 0.5])
    assert batch.response_lengths.tolist() == [2, 3, 4, 5]
    return batch


def train_metrics(tmp_path, model, batch, overrides) -> dict:
    tmp_path.mkdir(exist_ok=True)
    trainer = trainer_for(tmp_path, model, ["train.prompts_per_step=1", *overrides])
    return trainer.train_on(batch.select(list(range(len(batch)))))


def test_entropy_is_the_token_mean_over_the_batch(tmp_path, random_model, ragged_batch):
    """One minibatch, one epoch, micro-batches of 1 sample: entropy is the mean over all 14 response tokens
    of the untrained model (computed here directly), not the mean of the 4 samples' means."""
    from rlvr.losses import masked_mean
    from rlvr.models import load_model_and_tokenizer, response_logprobs

    T = 0.05  # a random model is near uniform: sharpened, the samples' entropies differ
    overrides = ["train.micro_batch_size=1", "train.minibatches=1", f"rollout.temperature={T}"]
    m = train_metrics(tmp_path, random_model, ragged_batch, overrides)
    model, _ = load_model_and_tokenizer(str(random_model))
    model.eval()
    with torch.no_grad():
        _, ent = response_logprobs(model, ragged_batch, temperature=T, with_entropy=True)
    mask = ragged_batch.response_mask
    assert m["entropy"] == pytest.approx(float(masked_mean(ent, mask)), rel=1e-5)
    per_sample = float(masked_mean(ent, mask, dim=-1).mean())
    assert abs(m["entropy"] - per_sample) > 1e-3  # the two means differ on this batch
    assert m["pg_loss"] == pytest.approx(m["loss"], rel=1e-6)  # GRPO without KL: the loss is the pg loss


def test_update_metrics_do_not_depend_on_micro_batch_size(tmp_path, random_model, ragged_batch):
    """Two epochs of one minibatch with a large lr (the second epoch is off-policy: clipping happens),
    micro-batches of 1 and of 4: the same clip_frac, entropy, approx_kl and pg_loss."""
    common = ["train.epochs=2", "train.minibatches=1", "train.lr=0.05"]
    one = train_metrics(tmp_path / "a", random_model, ragged_batch, [*common, "train.micro_batch_size=1"])
    four = train_metrics(tmp_path / "b", random_model, ragged_batch, [*common, "train.micro_batch_size=4"])
    assert one["clip_frac"] > 0, "no clipping: the comparison proves little"
    for k in ("clip_frac", "clip_frac_low", "clip_frac_high", "entropy", "approx_kl", "pg_loss", "loss"):
        assert one[k] == pytest.approx(four[k], rel=1e-4, abs=1e-7), k


@pytest.mark.slow  # two accelerate launches: about 80 s on 2 busy cores
@pytest.mark.distributed
def test_update_metrics_two_processes_equal_one(tmp_path, random_model, ragged_batch):
    """Two prompts, one per process, with different response lengths on each: the token-weighted means
    and the loss terms over both processes are those of one process holding both."""
    import os
    import subprocess
    import sys

    from rlvr.batch import concat_batches

    other = ragged_batch.select([3, 2, 1, 0])  # the same prompt again with another group id: lengths 5, 4, 3, 2
    other.group = torch.ones_like(other.group)
    other.rewards = torch.tensor([0.5, 0.0, 1.0, 0.75])
    both = concat_batches([ragged_batch, other], 0)
    torch.save(both, tmp_path / "batch.pt")
    cfg = helpers.write_config(tmp_path / "c.yaml", random_model, {"data": {"train_size": 64, "eval_size": 4}})
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root / "tests"), "ACCELERATE_USE_CPU": "1"}
    common = ["train.epochs=2", "train.minibatches=1", "train.lr=0.05", "train.micro_batch_size=2"]
    out = {}
    for procs in (1, 2):
        launch = [sys.executable] if procs == 1 else [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
        ]  # fmt: skip
        script = [
            str(root / "tests" / "one_step.py"),
            str(cfg),
            str(tmp_path / "batch.pt"),
            str(tmp_path / f"{procs}.pt"),
        ]
        r = subprocess.run([*launch, *script, *common], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        out[procs] = torch.load(tmp_path / f"{procs}.pt", weights_only=False)["metrics"]
    assert out[1]["clip_frac"] > 0
    for k in ("clip_frac", "entropy", "approx_kl", "pg_loss", "loss"):
        assert out[2][k] == pytest.approx(out[1][k], rel=1e-4, abs=1e-7), k


# ---------------------------------------------------------------- ReMax, DAPO


def test_remax_logs_the_greedy_reward(tmp_path, random_model):
    def reward(problems, completions):  # depends on the prompt: greedy responses may all be alike
        return [(len(p.prompt) * 7 + len(set(c))) % 5 / 4 for p, c in zip(problems, completions, strict=True)]

    trainer = trainer_for(tmp_path, random_model, reward_fn=reward, algorithm={"name": "remax"})
    batch, _ = trainer.collect(0)
    greedy = batch.extras["greedy_rewards"][::N]  # one per prompt
    assert batch.metrics["reward/greedy_mean"] == pytest.approx(float(greedy.double().mean()))


def test_overlong_penalty_metrics_by_hand():
    """max_new_tokens 6, buffer 2, factor 0.5: lengths 3, 4, 5, 6 -> penalties 0, 0, -0.25, -0.5."""
    from rlvr.algorithms import build_algorithm

    algo = build_algorithm({"name": "dapo", "overlong_buffer": 2, "overlong_factor": 0.5}, max_new_tokens=6)
    lengths = torch.tensor([3.0, 4.0, 5.0, 6.0])
    batch = SimpleNamespace(response_lengths=lengths, metrics={})
    algo.prepare(batch)
    assert batch.metrics["reward/overlong_penalty_mean"] == pytest.approx(-0.75 / 4)
    assert batch.metrics["reward/overlong_penalised_frac"] == 0.5
    off = build_algorithm({"name": "dapo"}, max_new_tokens=6)
    batch = SimpleNamespace(response_lengths=lengths, metrics={})
    off.prepare(batch)
    assert batch.metrics == {}  # no shaping, nothing to log


def test_dapo_run_logs_the_overlong_penalty(tmp_path, random_model):
    """A random model rarely says eos within 6 tokens: most responses are at the limit, penalised 1."""
    trainer = trainer_for(tmp_path, random_model, ["train.steps=1"], algorithm={"name": "dapo", "overlong_buffer": 2})
    trainer.fit()
    (r,) = rows(tmp_path / "run")
    assert -1 <= r["reward/overlong_penalty_mean"] < 0 < r["reward/overlong_penalised_frac"] <= 1
    assert r["reward/overlong_penalty_mean"] <= -r["reward/overlong_penalised_frac"] / 2  # buffer 2: -0.5 or -1


def test_groups_kept_frac_counts_surplus_groups_as_kept(tmp_path, random_model):
    """4 prompts a step; the first prompt of round 0 always scores the same (dropped), every other group
    varies. Round 0 keeps 3, round 1 fills the batch with 1 and has 3 surplus groups with signal: the
    fraction with signal is 7/8 (the old have/seen was 4/8)."""
    const = {}

    def reward(problems, completions):
        return [
            0.0 if p.prompt == const["prompt"] else len(set(c)) / 8 + i / 100
            for i, (p, c) in enumerate(zip(problems, completions, strict=True))
        ]

    trainer = trainer_for(tmp_path, random_model, reward_fn=reward, algorithm={"name": "dapo"})
    const["prompt"] = trainer.step_problems(0, 0)[0].prompt
    drawn = [p.prompt for r in (0, 1) for p in trainer.step_problems(0, r)]
    batch, metrics = trainer.collect(0)
    assert metrics["sampling/rounds"] == 2 and metrics["sampling/shortfall"] == 0 and len(batch) == 4 * N
    with_signal = sum(p != const["prompt"] for p in drawn)
    assert with_signal >= 7
    assert metrics["sampling/groups_kept_frac"] == pytest.approx(with_signal / 8)
