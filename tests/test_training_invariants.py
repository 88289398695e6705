"""Training invariants that no test used to check (issue 8, item 6).

Each test computes its expectation independently of the code under test (a hand-built
mask, transformers' own forward pass and `generate` scores, a schedule written out by
hand) and guards against a change that once passed the whole suite:

* eos dropped from the response mask in `make_batch`;
* log-probs not divided by the sampling temperature (other tests train at T = 1);
* the same prompt order in every epoch of the step sampler (and the same minibatches in
  every PPO epoch over one rollout batch);
* resume forgetting the learning-rate schedule.

All on a random-init 2-layer model: seconds, nothing downloaded. The trainer is observed
through hooks (the algorithm's, and torch's optimizer step pre-hooks), never by replacing
its methods.
"""

import json
from pathlib import Path

import pytest
import torch

import helpers
from helpers import make_random_model
from rlvr.algorithms import GRPO


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return make_random_model(tmp_path_factory.mktemp("model") / "m")


def zero_reward(problems, completions):
    return [0.0] * len(completions)


def varied_reward(problems, completions):
    # spread inside a group, so every update moves the weights
    return [len(set(c)) / 8.0 for c in completions]


def make_trainer(path: Path, model: Path, reward_fn=zero_reward, **sections):
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return Trainer(load_config(helpers.write_config(path, model, **sections)), reward_fn=reward_fn)


def before_each_optimizer_step(trainer, fn) -> None:
    """Call fn(torch optimizer) just before each step of the policy's optimizer (gradients final)."""
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    inner.register_step_pre_hook(lambda optimizer, args, kwargs: fn(optimizer))


class RecordingGRPO(GRPO):
    """GRPO that notes, through its hooks, the prompts of every scored batch and the rows
    (by `batch.scores`, set to a row id) of every micro-batch its loss sees."""

    def after_scoring(self, batch):
        super().after_scoring(batch)
        self.__dict__.setdefault("prompts", []).append([p.prompt for p in batch.problems])

    def compute_loss(self, batch, logprobs, entropy=None, **extras):
        self.__dict__.setdefault("rows", []).append([int(i) for i in batch.scores])
        return super().compute_loss(batch, logprobs, entropy=entropy, **extras)


RECORDING = {"name": f"{__name__}:RecordingGRPO"}


def plain_response_logprobs(model, prompt_ids: list[int], response_ids: list[int], temperature: float) -> torch.Tensor:
    """log softmax(logits / T) of each response token, from one unpadded forward pass. [len(response_ids)]"""
    ids = torch.tensor([prompt_ids + response_ids])
    logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()  # predicts response_ids
    return torch.log_softmax(logits / temperature, -1).gather(-1, torch.tensor(response_ids)[:, None])[:, 0]


# ------------------------------------------------------------ eos in the response mask


def test_make_batch_masks_exactly_the_generated_tokens_eos_included(random_model):
    from rlvr.models import load_model_and_tokenizer
    from rlvr.rollout import make_batch
    from rlvr.tasks import Problem

    _, tok = load_model_and_tokenizer(str(random_model))
    eos, pad = tok.eos_token_id, tok.pad_token_id
    a, b, c, d = tok.convert_tokens_to_ids(["1", "2", "3", "4"])
    assert len({eos, pad, a, b, c, d}) == 6
    prompt_ids = torch.tensor([[pad, pad, a, b], [c, d, a, b], [pad, a, c, d]])
    prompt_mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]])
    responses = torch.tensor(
        [
            [a, b, eos, c, eos],  # ends with eos at 2; what follows is junk
            [a, b, c, d, a],  # no eos: truncated at max_new_tokens
            [eos, a, b, pad, pad],  # eos straight away: a response of one token
        ]
    )
    problems = [Problem(prompt=str(i), answer="") for i in range(3)]
    batch = make_batch(prompt_ids, prompt_mask, responses, problems, 1, tok)

    want_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float)
    assert torch.equal(batch.response_mask.float(), want_mask)
    assert batch.response_lengths.tolist() == [3, 5, 1]
    assert batch.truncated.tolist() == [False, True, False]
    assert batch.prompt_len == 4
    assert batch.response_ids.tolist() == [[a, b, eos, pad, pad], [a, b, c, d, a], [eos, pad, pad, pad, pad]]
    assert batch.attention_mask.tolist() == [[0, 0, 1, 1, 1, 1, 1, 0, 0], [1] * 9, [0, 1, 1, 1, 1, 0, 0, 0, 0]]
    assert batch.completions == ["12", "12341", ""]


# ------------------------------------------------------------ eos and temperature in the update

T_TRAIN = 0.7


def test_first_update_gradient_is_the_policy_gradient_over_every_response_token_at_temperature(tmp_path, random_model):
    """One update of Dr. GRPO (A = r - group mean), token-mean, at T = 0.7, on hand-built responses.

    At ratio 1 (the first minibatch) the loss gradient is -1/N sum_i A_i sum_t grad log pi_T(y_it),
    over every response token *including eos* (N of them), pi_T = softmax(logits / T). Both the
    old log-probs and the gradient are checked against transformers' plain forward pass.
    """
    from transformers import AutoModelForCausalLM

    from rlvr.rollout import make_batch

    trainer = make_trainer(
        tmp_path / "c.yaml",
        random_model,
        algorithm={"name": "grpo", "scale": "none", "loss_agg": "token-mean"},
        rollout={"n": 4, "temperature": T_TRAIN, "max_new_tokens": 4},
        train={"prompts_per_step": 2, "micro_batch_size": 3, "grad_clip": None},
    )
    tok = trainer.tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id
    a, b, c, d, x = tok.convert_tokens_to_ids(["1", "2", "3", "4", "7"])
    problems = trainer.train_problems[:2]
    enc = tok([p.prompt for p in problems], return_tensors="pt", padding=True)
    responses = torch.tensor(
        [
            [eos, x, x, x],
            [a, eos, pad, pad],
            [a, b, eos, x],
            [a, b, c, d],  # prompt 0
            [b, eos, pad, pad],
            [eos, pad, pad, pad],
            [c, c, c, c],
            [d, a, eos, pad],  # prompt 1
        ]
    )
    # the generated tokens, by hand: up to and including the first eos, or all 4 when truncated
    generated = [[eos], [a, eos], [a, b, eos], [a, b, c, d], [b, eos], [eos], [c, c, c, c], [d, a, eos]]
    rewards = [1.0, 0.0, 0.5, 0.0, 1.0, 0.0, 0.0, 1.0]
    advantages = [0.625, -0.375, 0.125, -0.375, 0.5, -0.5, -0.5, 0.5]  # r - mean of its group of 4
    batch = make_batch(
        enc["input_ids"].repeat_interleave(4, 0),
        enc["attention_mask"].repeat_interleave(4, 0),
        responses,
        problems,
        4,
        tok,
    )
    batch.rewards = batch.scores = torch.tensor(rewards)

    grads = {}

    def capture(optimizer):
        for name, p in trainer.accelerator.unwrap_model(trainer.policy).named_parameters():
            grads[name] = p.grad.detach().clone()

    before_each_optimizer_step(trainer, capture)
    metrics = trainer.train_on(batch)

    # independent: an unpadded forward pass per sample through a fresh copy of the model
    ref = AutoModelForCausalLM.from_pretrained(random_model, dtype=torch.float32)
    prompts = [ids[m.bool()].tolist() for ids, m in zip(enc["input_ids"], enc["attention_mask"], strict=True)]
    n_tokens = sum(len(g) for g in generated)
    assert n_tokens == 20
    loss = 0.0
    for i, (gen, adv) in enumerate(zip(generated, advantages, strict=True)):
        lp = plain_response_logprobs(ref, prompts[i // 4], gen, T_TRAIN)
        torch.testing.assert_close(
            batch.old_logprobs[i, : len(gen)],
            lp.detach(),
            rtol=1e-4,
            atol=1e-5,
            msg=lambda m, i=i: f"old log-probs of sample {i} (T={T_TRAIN}): {m}",
        )
        loss = loss - adv * lp.sum()
        at_T1 = plain_response_logprobs(ref, prompts[i // 4], gen, 1.0).detach()
        assert (lp.detach() - at_T1).abs().max() > 1e-3, "T makes no difference here: the check proves nothing"
    (loss / n_tokens).backward()

    assert batch.response_mask.sum().item() == n_tokens
    assert metrics["clip_frac"] == 0 and abs(metrics["approx_kl"]) < 1e-6  # ratio 1 on the first minibatch
    assert grads.keys() == dict(ref.named_parameters()).keys()
    for name, p in ref.named_parameters():
        torch.testing.assert_close(
            grads[name], p.grad, rtol=1e-4, atol=1e-7, msg=lambda m, name=name: f"grad of {name}: {m}"
        )
    head = grads["lm_head.weight"]
    assert head[eos].abs().sum() > 0


def test_old_logprobs_are_those_generate_sampled_from_at_temperature(tmp_path, random_model):
    """The engine samples from softmax(logits / T) (transformers' own processed scores), and the
    trainer's old log-probs of those samples are the log-probs of that distribution."""
    from rlvr.rollout import Sampling, make_batch

    T, n, max_new = 0.5, 3, 5
    trainer = make_trainer(
        tmp_path / "c.yaml",
        random_model,
        rollout={"n": n, "temperature": T, "max_new_tokens": max_new},
        train={"prompts_per_step": 2, "micro_batch_size": 4},
    )
    tok, model = trainer.tokenizer, trainer.accelerator.unwrap_model(trainer.policy)
    problems = trainer.train_problems[:2]
    enc = tok([p.prompt for p in problems], return_tensors="pt", padding=True)
    ids, att = enc["input_ids"].repeat_interleave(n, 0), enc["attention_mask"].repeat_interleave(n, 0)
    model.eval()
    torch.manual_seed(3)
    out = model.generate(
        input_ids=ids,
        attention_mask=att,
        do_sample=True,
        temperature=T,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        output_scores=True,
        return_dict_in_generate=True,
    )
    P = ids.shape[1]
    resp = out.sequences[:, P:]
    torch.manual_seed(3)
    engine_batch = trainer.engine.generate(problems, n, Sampling(temperature=T, max_new_tokens=max_new))
    assert torch.equal(engine_batch.response_ids[:, : resp.shape[1]], resp), (
        "the engine did not sample at T as generate does"
    )

    batch = make_batch(ids, att, resp, problems, n, tok)
    trainer.logprob_pass(batch)
    sampled_from = torch.stack(
        [torch.log_softmax(s.float(), -1) for s in out.scores], 1
    )  # [B, R, V], after the T warper
    want = sampled_from.gather(-1, resp[..., None])[..., 0]
    mask = batch.response_mask.bool()
    assert mask.sum() >= 10
    torch.testing.assert_close(batch.old_logprobs[mask], want[mask], rtol=1e-4, atol=1e-5)
    at_T1 = torch.stack([torch.log_softmax(s.float() * T, -1) for s in out.scores], 1).gather(-1, resp[..., None])[
        ..., 0
    ]
    assert (want[mask] - at_T1[mask]).abs().max() > 1e-2, "T makes no difference here: the check proves nothing"


# ------------------------------------------------------------ prompt order over epochs


def test_each_epoch_visits_every_prompt_once_in_a_fresh_order(tmp_path, random_model):
    """16 training prompts, 4 per step: steps 1-4 are one epoch, 5-8 the next. Read from what the
    trainer actually rolled out during fit()."""
    trainer = make_trainer(
        tmp_path / "a.yaml",
        random_model,
        data={"train_size": 16},
        algorithm=RECORDING,
        rollout={"n": 2, "max_new_tokens": 2},
        train={"steps": 8, "prompts_per_step": 4},
    )
    trainer.fit()
    seen = [prompts[::2] for prompts in trainer.algorithm.prompts]  # each prompt's 2 samples are adjacent
    everything = sorted(p.prompt for p in trainer.train_problems)
    assert len(set(everything)) == 16 and len(seen) == 8 and all(len(s) == 4 for s in seen)
    epochs = [[q for s in seen[e * 4 : (e + 1) * 4] for q in s] for e in range(2)]
    for e, order in enumerate(epochs):
        assert sorted(order) == everything, f"epoch {e + 1} is not a permutation of the training prompts"
    assert epochs[0] != epochs[1], "the second epoch repeats the first epoch's prompt order"
    assert [set(s) for s in seen[:4]] != [set(s) for s in seen[4:]], "the second epoch repeats the first's batches"

    # deterministic per seed, and the seed matters
    again = make_trainer(
        tmp_path / "b" / "b.yaml", random_model, data={"train_size": 16}, train={"prompts_per_step": 4}
    )
    assert [[p.prompt for p in again.step_problems(s)] for s in range(8)] == seen
    other = make_trainer(
        tmp_path / "c" / "c.yaml", random_model, data={"train_size": 16}, train={"prompts_per_step": 4, "seed": 1}
    )
    assert [[p.prompt for p in other.step_problems(s)] for s in range(8)] != seen


def test_each_ppo_epoch_reshuffles_the_minibatches(tmp_path, random_model):
    """train.epochs=2 x minibatches=2 over one rollout batch of 8: each epoch's two minibatches
    split the batch, and the second epoch splits it differently."""
    trainer = make_trainer(
        tmp_path / "c.yaml",
        random_model,
        varied_reward,
        algorithm=RECORDING,
        rollout={"n": 2, "max_new_tokens": 3},
        train={"prompts_per_step": 4, "epochs": 2, "minibatches": 2, "micro_batch_size": 2},
    )
    batch, _ = trainer.collect(0)
    batch.scores = torch.arange(len(batch), dtype=torch.float)  # a row id that rides along through select()
    minibatches: list[list[int]] = []
    before_each_optimizer_step(trainer, lambda optimizer: minibatches.append(sum(trainer.algorithm.rows, [])))
    before_each_optimizer_step(trainer, lambda optimizer: trainer.algorithm.rows.clear())
    trainer.train_on(batch)
    assert trainer.algorithm.rows == [] and len(minibatches) == 4
    epochs = [minibatches[0:2], minibatches[2:4]]
    for e, parts in enumerate(epochs):
        assert [len(p) for p in parts] == [4, 4] and sorted(parts[0] + parts[1]) == list(range(8)), (e, parts)
    assert {frozenset(p) for p in epochs[0]} != {frozenset(p) for p in epochs[1]}, (
        f"the second epoch reuses the first epoch's minibatches: {epochs}"
    )


# ------------------------------------------------------------ the learning-rate schedule on resume


LR, WARMUP = 1e-3, 8


def run_with_lr_log(cfg_path: Path, model: Path, steps: int = 4) -> list[float]:
    """fit() once for `steps` steps, checkpointing every 2; the lr each optimizer step actually used."""
    trainer = make_trainer(
        cfg_path,
        model,
        varied_reward,
        rollout={"n": 2, "max_new_tokens": 3},
        train={"steps": steps, "prompts_per_step": 4, "minibatches": 2, "lr": LR, "warmup_steps": WARMUP},
        checkpoint={"every": 2},
    )
    used: list[float] = []
    before_each_optimizer_step(trainer, lambda optimizer: used.append(optimizer.param_groups[0]["lr"]))
    trainer.fit()
    return used


def test_resume_keeps_the_learning_rate_schedule(tmp_path, random_model):
    """4 steps x 2 minibatches with a linear warm-up over 8 optimizer steps, in one go vs. stopped
    after step 3 (its last checkpoint at step 2) and resumed: the same lr at every optimizer step
    (by hand: LR * (j + 1) / 8 at step j), the same logged lr, the same final weights."""
    from transformers import AutoModelForCausalLM

    want = [LR * min(1.0, (j + 1) / WARMUP) for j in range(8)]

    whole = run_with_lr_log(tmp_path / "whole" / "c.yaml", random_model)
    assert whole == pytest.approx(want, rel=1e-9)

    first = run_with_lr_log(tmp_path / "resumed" / "c.yaml", random_model, steps=3)
    assert first == pytest.approx(want[:6], rel=1e-9)
    assert (tmp_path / "resumed" / "run" / "checkpoints" / "step-2" / "trainer_state.json").is_file()
    second = run_with_lr_log(tmp_path / "resumed" / "c.yaml", random_model)
    assert second == pytest.approx(want[4:], rel=1e-9), "the resumed run restarted or lost the lr schedule"

    rows = {
        name: [json.loads(l) for l in (tmp_path / name / "run" / "metrics.jsonl").read_text().splitlines()]
        for name in ("whole", "resumed")
    }
    assert [r["step"] for r in rows["resumed"]] == [1, 2, 3, 4]
    assert [r["lr"] for r in rows["resumed"]] == [r["lr"] for r in rows["whole"]]
    assert len({r["lr"] for r in rows["whole"]}) == 4  # still warming up: a restarted schedule would show
    # the logged lr is the mean of the lrs the step's two optimizer steps used, not the next step's,
    # and small values keep their digits (metrics.jsonl once rounded to 6 decimals: 1e-7 became 0)
    logged = [r["lr"] for r in rows["whole"]]
    assert logged == pytest.approx([(want[2 * s] + want[2 * s + 1]) / 2 for s in range(4)], rel=1e-6)

    a = dict(AutoModelForCausalLM.from_pretrained(tmp_path / "whole" / "run" / "final").named_parameters())
    b = dict(AutoModelForCausalLM.from_pretrained(tmp_path / "resumed" / "run" / "final").named_parameters())
    base = dict(AutoModelForCausalLM.from_pretrained(random_model).named_parameters())
    assert any(not torch.equal(a[k], base[k]) for k in a), "training did not move the weights"
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7, msg=lambda m, k=k: f"{k}: {m}")


# ------------------------------------------------------------ the checkpoint's generation settings


def test_sampling_ignores_the_checkpoints_generation_config(tmp_path, random_model):
    """A hub checkpoint's generation_config.json (repetition_penalty, no_repeat_ngram_size, suppressed
    tokens, a minimum length) must not change what the engine samples: the trainer scores the samples
    under softmax(logits / T) alone. Same seed, a clean model and a model carrying such settings: the
    same samples, and the model's own settings are back afterwards."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from rlvr.rollout import HFEngine, Sampling
    from rlvr.tasks import Problem

    dressed = tmp_path / "dressed"
    shutil.copytree(random_model, dressed)
    tok = AutoTokenizer.from_pretrained(random_model)
    gc = GenerationConfig.from_pretrained(dressed)
    gc.repetition_penalty, gc.no_repeat_ngram_size, gc.min_new_tokens = 3.0, 1, 5
    gc.suppress_tokens = tok.convert_tokens_to_ids(list("0123456789"))
    gc.save_pretrained(dressed)

    problems = [Problem(prompt=f"{i} + {i} =", answer="") for i in range(4)]
    sampling = Sampling(temperature=0.8, max_new_tokens=8)
    out = {}
    for name, path in (("clean", random_model), ("dressed", dressed)):
        model = AutoModelForCausalLM.from_pretrained(path)
        torch.manual_seed(0)
        out[name] = HFEngine(model, AutoTokenizer.from_pretrained(path)).generate(problems, 4, sampling)
        if name == "dressed":
            assert model.generation_config.repetition_penalty == 3.0  # restored after sampling
    assert torch.equal(out["clean"].input_ids, out["dressed"].input_ids)
