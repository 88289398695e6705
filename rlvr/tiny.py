"""The embedded default base model: a tiny causal LM built offline in under a minute on CPU.

`ensure_tiny_model()` returns a directory holding an ordinary transformers checkpoint and
tokenizer (`AutoModelForCausalLM` / `AutoTokenizer` load it with no hub access). It is built
once by `build_tiny_model` and cached under a key that hashes every build setting.

What is built
-------------
* Task: `TINY_TASK`, reasoning-gym `chain_sum` with two 1-2 digit terms ("... 15 - 43 ="),
  answer "-28". The space holds ~16k distinct prompts, so the hash split
  (`rlvr.tasks.split_of`) leaves ~1.6k held out; RL recipes use the same task.
* Tokenizer: byte-level BPE trained with the `tokenizers` library on train-split task text,
  digits pre-split one per token so arithmetic is learnable, the full 256-byte alphabet so any
  text encodes. `<|endoftext|>` is eos, `<|pad|>` is pad (distinct), no BOS, nothing is added
  to a prompt by `tokenizer(prompt)`, left padding.
* Model: a small Qwen2 (see `_SETTINGS`), random init, dropout 0, tied embeddings.
* Format contract: the model is fed `tokenizer(problem.prompt)["input_ids"]` and trained to
  continue with `tokenizer(" " + answer)["input_ids"] + [eos]`. Each SFT sequence is exactly
  prompt_ids + completion_ids, with prompt_ids the tokenization of the prompt alone, so
  sampling from the prompt alone is in distribution. Reward is
  `score_reasoning_gym(decoded completion without special tokens, problem)`.
* Training: supervised from scratch, loss on completion tokens only, on train-split problems,
  from an imperfect teacher: each time an example is drawn, with probability 0.5 its target
  answer has its sign flipped (`answer_noise`, `noise_deltas`). The base therefore knows the
  sign of most answers but samples it carelessly, and it is under-trained on the digits.
  Sampled at temperature 1 it solves a held-out problem some of the time (pass@1 ~0.3, pass@16
  ~0.9, per-problem rates spread from 0 to 1): the regime of Yue et al., where RL from the
  verifier can raise pass@1 by sharpening what the base already samples (measured: +18 to
  +20 points with recipes/tiny/grpo.yaml), and the eval shows whether it does more than that.
  Without the noise, RL gained under 2 points in the same budget: the errors of a plain
  under-trained model are per-problem digit confusions that 60 RL steps do not fix.

Why a plain torch loop and not TRL's `SFTTrainer`
-------------------------------------------------
`_train` is a plain loop (AdamW, warmup + cosine, grad clip 1.0, loss on completion tokens
only). TRL's `SFTTrainer` was tried with the same hyperparameters, fed pre-tokenized
`input_ids` + `completion_mask` (its prompt/completion text path tokenizes prompt+completion
as one string, which is not guaranteed to equal prompt_ids + completion_ids). It reaches the
same quality (held-out pass@1 0.28 vs 0.26-0.32) but, measured back to back on the 2-core
CPU box, costs ~47-51 ms/step against ~23-26 ms/step for this loop (the Trainer's
per-step machinery), plus ~5 s to import trl; with its default
bf16=True on CPU it is ~10x slower still. That is ~75 s against ~40 s for the build, and the
project demo must build the base, RL-train and evaluate within 10 minutes on 2 cores, so
the loop wins. The loop is deterministic for a seed and touches no global state it does
not restore (torch threads, RNG).

Threads: the build runs on 1 torch thread. On the 2-core box, shared with other jobs, 2
threads measured anywhere from 27 to 225 ms/step (one whole build took 600 s: the OpenMP
threads wait on each other at every op while the other core is busy elsewhere), 1 thread a
steady 33-37 ms/step; on an idle machine 2 threads gain only ~25%.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pathlib
import random
import shutil
import tempfile
import time
from typing import Any, Sequence

TINY_MODEL = "tiny"  # the model.path value that selects the embedded base model

TINY_TASK: dict[str, Any] = {
    "name": "chain_sum",
    "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
}

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

# Every setting that changes the built checkpoint; the cache key hashes all of it.
_SETTINGS: dict[str, Any] = {
    "format_version": 2,
    "task": TINY_TASK,
    "n_train": 8000,  # distinct train-split problems
    "tokenizer": {"kind": "bpe-bytelevel-digits", "vocab_size": 320},
    "model": {
        "family": "qwen2",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 64,
    },
    "train": {
        "steps": 1500,
        "batch_size": 64,
        "lr": 3e-3,
        "warmup": 50,
        "weight_decay": 0.0,
        "min_lr_ratio": 0.1,
        # the imperfect teacher: half the time an SFT target has its sign flipped (drawn
        # afresh at every use), so the base knows the sign but samples it carelessly
        "answer_noise": 0.5,
        "noise_deltas": ["sign"],
    },
}

# `tiny-hd32`: the same base with head_dim 32 (2 heads of 32 instead of 4 of 16; the same parameters), the
# variant vLLM's CPU attention accepts (it refuses head_dim 16). Trained as `tiny` (1500 steps) head_dim-32
# builds of this size reached held-out pass@1 only 6-12% (measured: 2 or 3 heads, a Llama with head_dim 32,
# hidden 128, lr 6e-3, rope_theta 100); with 4x the SFT steps it passes the 4x16 base: pass@1 44%, pass@4
# 87%, pass@16 96.5% (256 held-out problems x 16), a stronger base in another regime, and a build of ~4-9
# min instead of ~1, so it is not the default. `model.path: tiny-hd32` selects it (recipes/tiny/grpo_vllm.yaml).
TINY_HD32 = "tiny-hd32"
TINY_TEACHER = "tiny-teacher"
_VARIANTS: dict[str, dict[str, Any]] = {
    TINY_MODEL: _SETTINGS,
    TINY_HD32: {
        **_SETTINGS,
        "model": {**_SETTINGS["model"], "num_attention_heads": 2, "num_key_value_heads": 2},
        "train": {**_SETTINGS["train"], "steps": 6000},
    },
    # `tiny-teacher`: the teacher of the distillation arm (algorithm.teacher, recipes/tiny/distill.yaml), the
    # same vocabulary without the base's imperfection: no sign noise, and 2x the SFT steps (a ~2 min build).
    # Measured (256 held-out problems x 16): pass@1 82%, pass@4 96%, pass@16 99.6% (the base: 30%, 66%, 86%);
    # without the noise alone (1500 steps) it was no stronger than the base: pass@1 32%, pass@16 86%.
    TINY_TEACHER: {**_SETTINGS, "train": {**_SETTINGS["train"], "answer_noise": 0.0, "steps": 3000}},
}
TINY_MODELS = tuple(_VARIANTS)  # the model.path values that select an embedded base

_MARKER = "rlvr_tiny.json"


def _settings_key(settings: dict[str, Any], seed: int) -> str:
    blob = json.dumps({"settings": settings, "seed": seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _cache_root(cache_dir: str | os.PathLike | None) -> pathlib.Path:
    if cache_dir is not None:
        return pathlib.Path(cache_dir).expanduser()
    env = os.environ.get("RLVR_CACHE")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path("~/.cache/rlvr").expanduser()


# --------------------------------------------------------------------------- tokenizer


def _build_tokenizer(texts: Sequence[str], vocab_size: int, model_max_length: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
    )


# --------------------------------------------------------------------------- model


def _build_model(model_cfg: dict[str, Any], tokenizer):
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = dict(model_cfg)
    family = cfg.pop("family")
    assert family == "qwen2", family
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        attention_dropout=0.0,
        rms_norm_eps=1e-6,
        initializer_range=0.02,
        use_cache=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **cfg,
    )
    model = AutoModelForCausalLM.from_config(config)
    gc = model.generation_config
    gc.eos_token_id = tokenizer.eos_token_id
    gc.pad_token_id = tokenizer.pad_token_id
    gc.bos_token_id = None
    return model


def _encode_examples(problems, tokenizer, deltas: Sequence[int] = ()):
    """Per problem: (prompt_ids, [completion ids of the answer, then of answer + d for d in deltas]).
    Each completion is ids(" " + answer) + [eos]; prompt_ids is the prompt tokenized alone."""
    eos = tokenizer.eos_token_id
    prompts = tokenizer([p.prompt for p in problems], add_special_tokens=False)["input_ids"]
    out = []
    for p, prompt_ids in zip(problems, prompts, strict=True):
        answers = [p.answer] + [
            str(-int(p.answer)) if d == "sign" else str(int(p.answer) + d)
            for d in deltas
            if not (d == "sign" and int(p.answer) == 0)
        ]
        comps = tokenizer([" " + a for a in answers], add_special_tokens=False)["input_ids"]
        out.append((list(prompt_ids), [list(c) + [eos] for c in comps]))
    return out


def _train(model, examples, train_cfg: dict[str, Any], pad_id: int, seed: int, progress: bool):
    import torch

    steps, bs = train_cfg["steps"], train_cfg["batch_size"]
    lr, warmup, min_ratio = train_cfg["lr"], train_cfg["warmup"], train_cfg["min_lr_ratio"]
    noise = train_cfg.get("answer_noise", 0.0)
    n = len(examples)

    def make_batch(idx: list[int], gen) -> tuple:
        """Right-padded batch; each example's target is its answer, or with probability
        `noise` a near miss drawn afresh every time (an imperfect teacher)."""
        flip = torch.rand(len(idx), generator=gen) < noise
        pick = torch.randint(1, 1 + max(1, len(examples[0][1]) - 1), (len(idx),), generator=gen)
        rows = [
            (examples[i][0], examples[i][1][int(pick[j]) if flip[j] and len(examples[i][1]) > 1 else 0])
            for j, i in enumerate(idx)
        ]
        width = max(len(p) + len(c) for p, c in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, (p, c) in enumerate(rows):
            seq = p + c
            ids[j, : len(seq)] = torch.tensor(seq)
            mask[j, : len(seq)] = 1
            labels[j, len(p) : len(seq)] = torch.tensor(c)
        return ids, mask, labels

    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=train_cfg["weight_decay"])

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    pos = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="tiny SFT", unit="step")
    model.train()
    ema = None
    for step in range(steps):
        if pos + bs > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + bs].tolist()
        pos += bs
        ids, mask, labels = make_batch(idx, gen)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss = float(out.loss.detach())
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        if bar is not None:
            bar.update(1)
            if step % 20 == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{ema:.3f}")
    if bar is not None:
        bar.close()
    model.eval()
    return ema


# --------------------------------------------------------------------------- public API


def build_tiny_model(out_dir, *, seed: int = 0, progress: bool = True, variant: str = TINY_MODEL) -> pathlib.Path:
    """Build the tiny base (tokenizer + SFT-trained Qwen2) into `out_dir`; returns the path.

    Always on CPU with 1 torch thread (restored afterwards), deterministic for a given `seed`
    on a given machine; the caller's RNG state is left untouched. Writes in place: use
    `ensure_tiny_model` for the cached, atomic version.
    """
    import torch

    from rlvr.tasks import reasoning_gym_problems

    settings = _VARIANTS[variant]
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads: ~20x slower while the other core is busy, ~20% faster idle
    try:
        with torch.random.fork_rng(devices=[]):
            task = settings["task"]
            problems = reasoning_gym_problems(
                task["name"], task["config"], split="train", size=settings["n_train"], seed=seed
            )
            random.Random(seed).shuffle(problems)
            tokenizer = _build_tokenizer(
                [p.prompt + " " + p.answer for p in problems],
                settings["tokenizer"]["vocab_size"],
                settings["model"]["max_position_embeddings"],
            )
            torch.manual_seed(seed)
            model = _build_model(settings["model"], tokenizer)
            examples = _encode_examples(problems, tokenizer, settings["train"].get("noise_deltas", ()))
            final_loss = _train(model, examples, settings["train"], tokenizer.pad_token_id, seed, progress)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        info = {
            "key": _settings_key(settings, seed),
            "seed": seed,
            "settings": settings,
            "n_params": sum(p.numel() for p in model.parameters()),
            "final_train_loss_ema": final_loss,
            "build_seconds": round(time.time() - t0, 2),
        }
        # Written last: its presence is what marks a directory as a finished checkpoint.
        (out / _MARKER).write_text(json.dumps(info, indent=2, sort_keys=True))
    finally:
        torch.set_num_threads(prev_threads)
    return out


@contextlib.contextmanager
def _file_lock(path: pathlib.Path):
    """Exclusive advisory lock (POSIX flock); a no-op where flock is unavailable."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename alone keeps the cache consistent
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # e.g. a filesystem without locks
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


def ensure_tiny_model(cache_dir=None, *, force: bool = False, variant: str = TINY_MODEL) -> pathlib.Path:
    """Path to the cached tiny base model, building it first if missing (or if `force`).

    Cache root: `cache_dir`, else $RLVR_CACHE, else ~/.cache/rlvr; the checkpoint lives in
    `<root>/tiny-<hash of all build settings>`, so changing a setting builds a new one. The
    build goes into a temp dir in the same root and is renamed into place, so a directory
    that looks finished always is. Concurrent callers (e.g. several accelerate ranks)
    serialize on a file lock: one builds, the others wait and reuse its result; where locks
    are unavailable, each builds and the first rename wins.
    """
    seed = 0
    root = _cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    if variant not in _VARIANTS:
        raise ValueError(f"unknown tiny model {variant!r} (known: {', '.join(_VARIANTS)})")
    final = root / f"tiny-{_settings_key(_VARIANTS[variant], seed)}"
    if (final / _MARKER).is_file() and not force:
        return final
    with _file_lock(root / f".{final.name}.lock"):
        if (final / _MARKER).is_file() and not force:
            return final  # built by another process while we waited
        # Leftovers of builds that were killed (we hold the lock, so none is live unless
        # locking is unsupported; the age check covers that case).
        for stale in root.glob(f".{final.name}.building-*"):
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=root))
        try:
            build_tiny_model(tmp, seed=seed, progress=True, variant=variant)
            if final.exists() and (force or not (final / _MARKER).is_file()):
                old = root / f".{final.name}.old-{os.getpid()}-{time.time_ns()}"
                try:
                    os.rename(final, old)  # move aside, then delete: never half-deleted
                    shutil.rmtree(old, ignore_errors=True)
                except FileNotFoundError:
                    pass
            try:
                os.rename(tmp, final)  # atomic; fails if another process got there first
            except OSError:
                if not (final / _MARKER).is_file():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------- evaluation helper


def sample_pass_rates(
    model,
    tokenizer,
    problems,
    n: int,
    *,
    temperature: float = 1.0,
    max_new_tokens: int = 8,
    batch_size: int = 1024,
    seed: int | None = 0,
) -> list[int]:
    """Correct-sample counts per problem: n samples each at `temperature` (top_k=0, top_p=1),
    drawn by the rollout engine and scored by `score_reasoning_gym` (correct = full score)."""
    import torch

    from rlvr.rollout import HFEngine, Sampling
    from rlvr.tasks import score_reasoning_gym

    sampling = Sampling(temperature=temperature, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        batch = HFEngine(model, tokenizer, batch_size=batch_size).generate(problems, n, sampling)
    correct = [score_reasoning_gym(t, p) >= 1.0 for p, t in zip(batch.problems, batch.completions, strict=True)]
    return [sum(correct[i * n : (i + 1) * n]) for i in range(len(problems))]
