"""The two training-step savings give the numbers of what they replace, to float tolerance:
`train.fused_old_logprobs` (rlvr/fused.py: the first minibatch's old log-probs from the update's own forward)
against the full no-grad pass, and `train.shared_prompt_forward` (rlvr/prefix.py: each distinct prompt run
once, the responses on its KV cache) against the plain forward (`models.response_logprobs`)."""

from pathlib import Path

import pytest
import torch

import helpers
from helpers import make_random_model
from rlvr import fused
from rlvr.models import load_model_and_tokenizer, response_logprobs
from rlvr.prefix import shared_prompt_logprobs
from rlvr.responses import make_batch
from rlvr.tasks import Problem
from rlvr.templates import encode_prompts


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return make_random_model(tmp_path_factory.mktemp("model") / "m")


def varied_reward(problems, completions):
    return [len(set(c)) / 8.0 for c in completions]  # spread inside a group: every update moves the weights


def make_trainer(path: Path, model_path: Path, **sections):
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return Trainer(load_config(helpers.write_config(path, model_path, **sections)), reward_fn=varied_reward)


def ragged_batch(tok, n: int = 3):
    """Prompts of three lengths (left-padded), n responses each with eos at different places (one none)."""
    problems = [Problem(prompt=p, answer="", id=str(i)) for i, p in enumerate(["1 + 2 =", "13 + 4 = ?", "7"])]
    enc = encode_prompts(tok, problems, return_tensors="pt", padding=True)
    g = torch.Generator().manual_seed(0)
    resp = torch.randint(3, len(tok), (len(problems) * n, 6), generator=g)
    for row, at in ((0, 2), (1, 0), (3, 5), (5, 3), (7, 1)):
        if row < len(resp):
            resp[row, at] = tok.eos_token_id
    return make_batch(
        enc["input_ids"].repeat_interleave(n, 0), enc["attention_mask"].repeat_interleave(n, 0), resp, problems, n, tok
    )


def grads_of(model, lp, mask):
    model.zero_grad()
    (lp * mask * torch.linspace(0.5, 1.5, mask.numel()).view_as(mask)).sum().backward()
    return {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}


def arch_model(random_model, arch: str):
    """The random Qwen2, a random Llama on its tokenizer, or the Qwen2 with LoRA adapters (peft), in train mode."""
    model, tok = load_model_and_tokenizer(str(random_model))
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(3)
        c = model.config
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=c.vocab_size,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=256,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        )
    elif arch == "qwen2+lora":
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(3)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        for name, p in model.named_parameters():  # non-zero B: the adapters change the forward
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)
    return model.train(), tok


@pytest.mark.parametrize("arch", ["qwen2", "llama", "qwen2+lora"])
@pytest.mark.parametrize("T", [1.0, 0.7])
def test_shared_prompt_forward_gives_the_plain_forwards_logprobs_and_gradients(random_model, T, arch):
    model, tok = arch_model(random_model, arch)
    batch = ragged_batch(tok).select([4, 0, 8, 2, 5, 1, 7])  # shuffled; prompt 2 once, prompts 0 and 1 several times
    mask = batch.response_mask
    lp, ent = response_logprobs(model, batch, temperature=T, with_entropy=True)
    want = grads_of(model, lp, mask)
    lp2, ent2 = shared_prompt_logprobs(model, batch, temperature=T, with_entropy=True)
    got = grads_of(model, lp2, mask)
    on = mask.bool()
    torch.testing.assert_close(lp2[on], lp[on], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent2[on], ent[on], rtol=1e-5, atol=1e-5)
    assert want and all(k in got for k in want)
    for k in want:
        if want[k] is None:  # frozen (the base weights under LoRA)
            assert got[k] is None, k
            continue
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6, msg=k)
    assert shared_prompt_logprobs(model, ragged_batch(tok, n=1), temperature=T) is None  # nothing to share


def step_grads(trainer, batch):
    """train_on(batch); the gradients of every trained model at each optimizer step, and the metrics."""
    seen: list[dict[str, torch.Tensor]] = []
    models = [trainer.accelerator.unwrap_model(m) for m in trainer.trained]

    def hook(optimizer, args, kwargs):
        if optimizer is getattr(trainer.optimizers[0], "optimizer", trainer.optimizers[0]):
            seen.append({f"{i}.{k}": p.grad.clone() for i, m in enumerate(models) for k, p in m.named_parameters()})

    for opt in trainer.optimizers[:1]:
        getattr(opt, "optimizer", opt).register_step_pre_hook(hook)
    metrics = trainer.train_on(batch)
    return seen, metrics


ALGOS = {
    "grpo": {"name": "grpo"},
    "ppo": {"name": "ppo", "kl_coef": 0.0},  # PPO's KL sits in the reward: with it on, the full pass is kept
}


@pytest.mark.parametrize("algo", sorted(ALGOS))
@pytest.mark.parametrize("fuse,share", [(True, False), (False, True), (True, True)])
def test_step_savings_give_the_full_pass_and_plain_forward_gradients(tmp_path, random_model, algo, fuse, share):
    """Two epochs x two minibatches, two micro-batches each, lr large enough that the later minibatches are
    visibly off-policy (ratio != 1): every optimizer step's gradients, the old log-probs the batch ends with
    and the loss equal those of the full pass with the plain forward."""
    sections = dict(
        algorithm=ALGOS[algo],
        rollout={"n": 4, "max_new_tokens": 5},
        train={"prompts_per_step": 4, "epochs": 2, "minibatches": 2, "micro_batch_size": 4, "lr": 3e-2},
    )
    saving = make_trainer(
        tmp_path / "a" / "c.yaml",
        random_model,
        **{**sections, "train": {**sections["train"], "fused_old_logprobs": fuse, "shared_prompt_forward": share}},
    )
    full = make_trainer(
        tmp_path / "b" / "c.yaml",
        random_model,
        **{**sections, "train": {**sections["train"], "fused_old_logprobs": False, "shared_prompt_forward": False}},
    )
    batch, _ = full.collect(0)
    assert fused.can_fuse(saving, batch) == fuse
    rows = list(range(len(batch)))
    a, b = batch.select(rows), batch.select(rows)
    got, m_got = step_grads(saving, a)
    want, m_want = step_grads(full, b)
    assert len(got) == len(want) == 4
    for s, (g, w) in enumerate(zip(got, want, strict=True)):
        for k in w:
            torch.testing.assert_close(g[k], w[k], rtol=2e-4, atol=1e-6, msg=f"optimizer step {s + 1}: {k}")
    on = batch.response_mask.bool()
    assert not a.old_logprobs.isnan().any()
    torch.testing.assert_close(a.old_logprobs[on], b.old_logprobs[on], rtol=1e-5, atol=1e-5)
    assert m_got["loss"] == pytest.approx(m_want["loss"], rel=1e-4, abs=1e-6)


def test_old_logprobs_are_all_computed_first_where_something_reads_them_before_the_update(tmp_path, random_model):
    """The KL in the reward reads old log-probs in compute_advantages: no fusing, no NaN rows; fusing leaves
    the first minibatch's rows NaN until the update (a reader that should have asked gets NaN, not numbers)."""
    kl = make_trainer(tmp_path / "kl" / "c.yaml", random_model, algorithm={"name": "ppo", "kl_coef": 0.1})
    batch, _ = kl.collect(0)
    assert kl.algorithm.old_logprobs_before_update and not fused.can_fuse(kl, batch)
    keep = make_trainer(tmp_path / "k" / "c.yaml", random_model, defaults={"model": {"dropout": "keep"}})
    assert not fused.can_fuse(keep, batch)
    off = make_trainer(tmp_path / "o" / "c.yaml", random_model, train={"fused_old_logprobs": False})
    assert not fused.can_fuse(off, batch)
    on = make_trainer(tmp_path / "on" / "c.yaml", random_model, train={"minibatches": 2})
    assert fused.can_fuse(on, batch)
    first = on.minibatch_parts(len(batch))[0][0]
    on.logprob_pass(batch, skip=first)
    nan_rows = batch.old_logprobs.isnan().all(-1)
    assert nan_rows[first].all() and nan_rows.sum() == len(first)
