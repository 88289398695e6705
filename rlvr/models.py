"""Loading models and scoring responses under them."""

from __future__ import annotations

from pathlib import Path

import torch

from rlvr.batch import RolloutBatch
from rlvr.errors import ConfigError
from rlvr.losses import entropy_from_logits, logprobs_from_logits
from rlvr.tiny import TINY_MODELS, ensure_tiny_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def configure_cpu_threads(n: int) -> None:
    """Torch intra-op threads on a CPU-only machine; GPU runs are left alone. One thread is the
    default: two threads on a 2-core machine were ~20x slower whenever the other core was busy
    and only ~20% faster when it was idle (bench/cpu_threads.py)."""
    if not torch.cuda.is_available():
        torch.set_num_threads(n)


def resolve_model_path(path: str) -> str:
    """'tiny' (or 'tiny-hd32') -> the embedded base model's directory (built once, cached); else as is."""
    if path in TINY_MODELS:
        return str(ensure_tiny_model(variant=path))
    return path


def load_model_and_tokenizer(path: str, dtype: str = "float32"):
    """A causal LM and its tokenizer, with a clear error naming model.path on failure."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    except (OSError, ValueError) as e:
        where = "local directory" if Path(path).exists() else "local directory or reachable hub model"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model.path: cannot load {path!r} as a {where}: {first}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def load_value_model(path: str, dtype: str = "float32") -> torch.nn.Module:
    """The critic: the policy's architecture with a scalar head on every token."""
    from transformers import AutoModelForTokenClassification
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the new value head is expected to be uninitialised
    try:
        model = AutoModelForTokenClassification.from_pretrained(path, num_labels=1, dtype=DTYPES[dtype])
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.path: cannot load {path!r} as a critic (token-classification head): {e}") from None
    finally:
        logging.set_verbosity(verbosity)
    return model


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Zero every dropout probability of `model`, in place: RL reuses the sampling policy's log-probs
    (and the critic's values) as fixed targets, so a random mask in the update makes the ratio and
    value loss noisy and the run depend on when the model was in train mode (model.dropout: off).
    Covers nn.Dropout modules, float attributes named *dropout* that modules copy from the config at
    init (Qwen2's attention_dropout), and the config's own *dropout* fields (a later rebuild)."""
    for cfg in {id(c): c for c in (getattr(m, "config", None) for m in model.modules()) if c is not None}.values():
        for k, v in list(vars(cfg).items()):
            if "dropout" in k and isinstance(v, float):
                setattr(cfg, k, 0.0)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        for k, v in list(vars(m).items()):
            if "dropout" in k and isinstance(v, float) and not isinstance(v, bool):
                setattr(m, k, 0.0)
    return model


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token, so a left-padded row (a prompt in a
    `RolloutBatch`) sees the positions it would alone; pads get 0 or repeat the last. [B, T]"""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def response_values(critic: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
    """V(s_t) for each response token t: the critic's output at the position before it. [B, R]"""
    R = batch.response_mask.shape[1]
    out = critic(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=position_ids(batch.attention_mask)
    )
    return out.logits[:, -R - 1 : -1, 0].float()  # [B, R]


def response_logprobs(
    model: torch.nn.Module,
    batch: RolloutBatch,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the response tokens under `model` ([B, R]), and entropy if asked.

    Logits are divided by the sampling temperature, so log-probs are those of
    the distribution the responses were drawn from.
    """
    R = batch.response_mask.shape[1]
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=position_ids(batch.attention_mask),
        logits_to_keep=R + 1,  # positions P-1 .. P+R-1; the last predicts past the end
        use_cache=False,
    )
    logits = out.logits[:, :-1].float()  # [B, R, V]
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logprobs = logprobs_from_logits(logits, batch.response_ids)  # [B, R]
    entropy = entropy_from_logits(logits) if with_entropy else None
    return logprobs, entropy
