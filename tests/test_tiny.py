"""The embedded tiny base model: checkpoint, cache, tokenizer contract, and base quality."""

import pathlib

import pytest

from rlvr import tiny
from rlvr.eval.passk import pass_at_k
from rlvr.tasks import reasoning_gym_problems, score_reasoning_gym


@pytest.fixture(scope="module")
def loaded(tiny_model_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path, local_files_only=True)
    return model, tokenizer


def test_checkpoint_loads_offline(tiny_model_path, loaded):
    model, tokenizer = loaded
    path = pathlib.Path(tiny_model_path)
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    assert model.config.model_type in ("qwen2", "llama")
    assert model.config.vocab_size >= len(tokenizer)
    gc = model.generation_config
    assert gc.eos_token_id == tokenizer.eos_token_id
    assert gc.pad_token_id == tokenizer.pad_token_id


def test_ensure_is_cached(tiny_model_path, monkeypatch):
    marker = pathlib.Path(tiny_model_path) / tiny._MARKER
    mtime = marker.stat().st_mtime_ns

    def no_build(*a, **k):
        raise AssertionError("ensure_tiny_model rebuilt a cached model")

    monkeypatch.setattr(tiny, "build_tiny_model", no_build)
    assert tiny.ensure_tiny_model() == tiny_model_path
    assert marker.stat().st_mtime_ns == mtime


def test_cache_key_tracks_settings(monkeypatch):
    key = tiny._settings_key(tiny._SETTINGS, 0)
    changed = {**tiny._SETTINGS, "train": {**tiny._SETTINGS["train"], "steps": 1}}
    assert tiny._settings_key(changed, 0) != key
    assert tiny._settings_key(tiny._SETTINGS, 1) != key


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    def crash(out_dir, **k):
        (pathlib.Path(out_dir) / "config.json").write_text("{}")  # half a checkpoint
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny, "build_tiny_model", crash)
    with pytest.raises(KeyboardInterrupt):
        tiny.ensure_tiny_model(tmp_path)
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")]


def test_tokenizer_contract(loaded):
    _, tok = loaded
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.bos_token is None
    assert tok.padding_side == "left"
    problem = reasoning_gym_problems(tiny.TINY_TASK["name"], tiny.TINY_TASK["config"], "eval", 4, seed=7)[0]
    ids = tok(problem.prompt)["input_ids"]
    special = set(tok.all_special_ids)
    assert not special & set(ids)
    assert tok.decode(ids) == problem.prompt
    comp = tok(" " + problem.answer)["input_ids"]
    assert tok.decode(comp + [tok.eos_token_id], skip_special_tokens=True) == " " + problem.answer
    assert score_reasoning_gym(tok.decode(comp), problem) == 1.0
    # digits are single tokens
    assert all(len(tok(d)["input_ids"]) == 1 for d in "0123456789")
    batch = tok([problem.prompt, "1 + 2 ="], padding=True)
    assert batch["input_ids"][1][0] == tok.pad_token_id  # left padded
    assert batch["attention_mask"][1][0] == 0 and batch["attention_mask"][1][-1] == 1


def test_base_quality_room_for_rl(loaded):
    """Sampled at T=1 the base solves held-out problems sometimes, not always or never."""
    model, tok = loaded
    n = 8
    problems = reasoning_gym_problems(tiny.TINY_TASK["name"], tiny.TINY_TASK["config"], "eval", 200, seed=2024)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steady on a shared 2-core box; 2 threads can stall
    try:
        counts = tiny.sample_pass_rates(model, tok, problems, n, temperature=1.0, seed=0)
    finally:
        torch.set_num_threads(threads)
    pass1 = sum(c / n for c in counts) / len(counts)
    pass_n = sum(pass_at_k(n, c, n) for c in counts) / len(counts)
    mixed = sum(0 < c < n for c in counts) / len(counts)
    assert 0.05 <= pass1 <= 0.70, pass1
    assert pass_n >= pass1 + 0.10, (pass1, pass_n)
    assert mixed >= 0.10, mixed


def test_the_head_dim_32_variant_is_a_separate_cached_build(tmp_path):
    """`tiny-hd32` (what vLLM's CPU attention accepts) differs from `tiny` only in its heads and SFT length,
    is cached under its own key, and an unknown variant is refused by name."""
    from rlvr.config import check_model_path

    hd32, base = tiny._VARIANTS[tiny.TINY_HD32], tiny._VARIANTS[tiny.TINY_MODEL]
    assert base is tiny._SETTINGS and tiny.TINY_MODELS == ("tiny", "tiny-hd32", "tiny-teacher")
    m = hd32["model"]
    assert m["hidden_size"] // m["num_attention_heads"] == 32 and m["num_key_value_heads"] == m["num_attention_heads"]
    assert {k: v for k, v in m.items() if "heads" not in k} == {
        k: v for k, v in base["model"].items() if "heads" not in k
    }
    assert tiny._settings_key(hd32, 0) != tiny._settings_key(base, 0)
    check_model_path("tiny-hd32")  # a model.path value, not a directory
    with pytest.raises(ValueError, match="unknown tiny model 'tiny-hd64'"):
        tiny.ensure_tiny_model(tmp_path, variant="tiny-hd64")
