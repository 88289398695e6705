"""Tiny random-init models for mechanics tests (seconds to build, nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

CHARS = list("0123456789+-=*/ ?:.,abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def make_random_model(
    out: str | Path, *, hidden: int = 32, layers: int = 2, seed: int = 0, heads: int = 4, kv_heads: int = 2
) -> Path:
    """A character-level tokenizer and a random Qwen2 causal LM saved at `out` (head_dim = hidden / heads;
    vLLM's CPU attention needs head_dim >= 32: hidden=64, heads=2)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    specials = ["<|pad|>", "<|endoftext|>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + CHARS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<|pad|>", eos_token="<|endoftext|>", unk_token="<unk>", padding_side="left"
    )
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=vocab["<|pad|>"],
        eos_token_id=vocab["<|endoftext|>"],
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.pad_token_id = cfg.pad_token_id
    model.generation_config.eos_token_id = cfg.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


TASK = {"task": "chain_sum", "task_config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}}


def write_config(path: Path, model: str | Path = "tiny", defaults: dict | None = None, **sections) -> Path:
    """A tiny run config at `path` (run dir beside it): `defaults`, then `sections`, merged per section."""
    import yaml

    cfg = {
        "output_dir": str(Path(path).parent / "run"),
        "model": {"path": str(model)},
        "data": {**TASK, "train_size": 16, "eval_size": 4},
        "algorithm": {"name": "grpo"},
        "rollout": {"n": 4, "max_new_tokens": 6},
        "train": {"steps": 2, "prompts_per_step": 4, "micro_batch_size": 16, "lr": 1e-3, "grad_clip": None},
        "eval": {"before": False, "after": False},
        "tracking": {"progress": False},
    }
    for layer in (defaults or {}, sections):
        for k, v in layer.items():
            cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    Path(path).write_text(yaml.safe_dump(cfg))
    return Path(path)


# Reward functions by import path (`reward.functions: [{name: "helpers:graded"}]`), TRL's convention
# f(prompts, completions, **columns): deterministic in the completion and the prompt.
def graded(prompts, completions, **columns):
    """0, 0.5 or 1 (correct), so groups have spread."""
    return [((sum(map(ord, c)) + len(p)) % 3) / 2 for p, c in zip(prompts, completions, strict=True)]


def parity(prompts, completions, **columns):
    """1 for about a third of random texts, else 0."""
    return [float((sum(map(ord, c)) + len(p)) % 3 == 0) for p, c in zip(prompts, completions, strict=True)]
