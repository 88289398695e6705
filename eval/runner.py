"""The eval: did training expand what the model solves, or sharpen what the base sampled?

`evaluate` is the one eval of this project: the in-training hook, the full eval after
training, `rlvr eval` and every sweep cell call it. It samples n completions per
held-out problem from a model and from its base (the base's samples are cached,
keyed by exactly what decides them), scores them with the task's verifier, and
computes every metric; with `out_dir` it stores every sample and writes
metrics.json, PNG plots and summary.md. It also scores completions made elsewhere
(a JSONL from vLLM, another framework), so the metrics never depend on who sampled.

Sampling under several processes: the problems are cut into fixed calls of
`max(1, batch_size // n)` problems, call j is seeded by (seed, j) and made by
process j % world, and the rows are gathered back in problem order. So the rows do
not depend on the number of processes, and the cache key (model, its dtype and
device type, problems, sampling settings, seed, problems per call) says how they
were drawn.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from rlvr.errors import ConfigError
from rlvr.tasks import Problem
from rlvr.templates import adds_special_tokens

from .metrics import (
    accuracy_histogram,
    bootstrap_pass_at_k,
    cover_at_tau,
    coverage,
    crossover_k_from_counts,
    interval_name,
    maj_at_k,
    sampling_efficiency_gap,
    summarize_samples,
)
from .passk import pass_at_k_curve
from .settings import EvalSettings

SAMPLE_KEYS = ("problem_id", "sample", "text", "tokens", "finish_reason", "answer", "reward", "correct")
DEFAULT_BATCH = 256  # sequences per generate() call when neither the settings nor the engine say
DEFAULT_MAX_NEW_TOKENS = 16  # response length of settings made without a run config (max_new_tokens unset)


# ---------------------------------------------------------------- samples


def extract_answer(text: str) -> str | None:
    """The final answer: the last \\boxed{...}, else <answer>...</answer>, else the last line."""
    from rlvr.rewards import answer_tag, last_boxed

    found = last_boxed(text)
    if found is None:
        found = answer_tag(text)
    if found is not None:
        return found.strip()
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return lines[-1] if lines else None


def problems_per_call(settings: EvalSettings) -> int:
    """Problems per generate() call: n samples of each, `batch_size` sequences a call."""
    return max(1, (settings.batch_size or DEFAULT_BATCH) // settings.n)


def call_seed(seed: int, call: int) -> int:
    return int(np.random.SeedSequence([seed, call]).generate_state(1)[0])


def sample_rows(
    engine,
    problems: list[Problem],
    settings: EvalSettings,
    score: Callable,
    *,
    desc: str = "sampling",
    progress: bool = True,
    rank: int = 0,
    world: int = 1,
) -> list[dict[str, Any]]:
    """n samples of each problem from `engine`, scored: one dict per sample (SAMPLE_KEYS + prompt).

    The problems are cut into calls of `problems_per_call` problems; call j is seeded by
    (settings.seed, j) and made by this process when j % world == rank, so a call's samples
    are the same whatever the number of processes. Returns this process's rows. The global
    RNG state is left as it was."""
    from tqdm.auto import tqdm

    from rlvr.rewards.runner import completion_id_lists
    from rlvr.rollout import Sampling

    n = settings.n
    sampling = Sampling(
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=0,
        max_new_tokens=settings.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
    )
    per_call = problems_per_call(settings)
    from rlvr.sampler import with_sampler

    sampler = with_sampler(engine, settings.sampler)  # eval.sampler: how an hf engine samples
    starts = list(range(0, len(problems), per_call))[rank::world]
    rows: list[dict[str, Any]] = []
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    bar = tqdm(  # leave=None: kept at the top level (rlvr eval), gone when under the training bar
        total=sum(len(problems[s : s + per_call]) for s in starts),
        desc=desc,
        disable=not progress,
        dynamic_ncols=True,
        leave=None,
    )
    with torch.random.fork_rng(devices=devices):
        for s in starts:
            chunk = problems[s : s + per_call]
            torch.manual_seed(call_seed(settings.seed, s // per_call))
            batch = sampler.generate(chunk, n, sampling)
            rewards, _ = score(batch.problems, batch.completions, completion_ids=completion_id_lists(batch))
            tokens = batch.response_mask.sum(-1).long().tolist()
            truncated = batch.truncated.tolist()  # lists: indexing a tensor per row costs microseconds
            answers = {t: extract_answer(t) for t in set(batch.completions)}  # n samples repeat themselves
            for i, (p, text) in enumerate(zip(batch.problems, batch.completions, strict=True)):
                rows.append(
                    {
                        "problem_id": p.id,
                        "sample": i % n,
                        "prompt": p.prompt,
                        "text": text,
                        "tokens": tokens[i],
                        "finish_reason": "length" if truncated[i] else "stop",
                        "answer": answers[text],
                        "reward": float(rewards[i]),
                        "correct": bool(rewards[i] >= settings.threshold),
                    }
                )
            bar.update(len(chunk))
    bar.close()
    return rows


def read_samples(paths: list[str | Path], problems: list[Problem], score: Callable, threshold: float) -> list[dict]:
    """Completions made elsewhere: JSONL rows with `text` (or `completion`) and `problem_id`
    (or the exact `prompt`). Rows without a reward are scored here. Files are merged."""
    by_id = {p.id: p for p in problems}
    by_prompt = {p.prompt: p for p in problems}
    rows, todo = [], []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--samples: samples file not found: {path}")
        try:
            text_all = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            line_no = path.read_bytes()[: e.start].count(b"\n") + 1
            raise ConfigError(f"{path} line {line_no}: not UTF-8 text ({e.reason})") from None
        for line_no, line in enumerate(text_all.splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path} line {line_no}: not JSON: {e}") from None
            if not isinstance(r, dict):
                raise ConfigError(f"{path} line {line_no}: expected a JSON object, got {type(r).__name__}")
            text = r.get("text", r.get("completion"))
            if not isinstance(text, str):
                raise ConfigError(f"{path} line {line_no}: needs a string 'text' (or 'completion')")
            p = by_id.get(r.get("problem_id")) or by_prompt.get(r.get("prompt"))
            if p is None:
                raise ConfigError(
                    f"{path} line {line_no}: problem_id {r.get('problem_id')!r} / prompt matches no "
                    f"problem of this eval set"
                )
            for key in ("tokens", "reward"):
                v = r.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v != v):
                    raise ConfigError(f"{path} line {line_no}: {key!r} must be a number, got {v!r}")
            row = {
                "problem_id": p.id,
                "sample": r.get("sample", 0),
                "prompt": p.prompt,
                "text": text,
                "tokens": int(r.get("tokens", len(text.split()))),
                "finish_reason": r.get("finish_reason", "stop"),
                "answer": r.get("answer", extract_answer(text)),
                "reward": r.get("reward"),
            }
            rows.append(row)
            if row["reward"] is None:
                todo.append((row, p))
    if todo:
        rewards, _ = score([p for _, p in todo], [r["text"] for r, _ in todo])
        for (row, _), rw in zip(todo, rewards.tolist(), strict=True):
            row["reward"] = float(rw)
    for row in rows:
        row["correct"] = bool(row["reward"] >= threshold)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")  # own name: parallel sweep cells share the base cache
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def apply_threshold(rows: list[dict], threshold: float) -> list[dict]:
    """Recompute `correct` from `reward` (cached samples may have been scored under another threshold)."""
    for r in rows:
        r["correct"] = bool(r["reward"] >= threshold)
    return rows


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]


# ---------------------------------------------------------------- the base cache


def model_fingerprint(path: str) -> str:
    """Identity of a checkpoint: its config and its weight files (name, size, head and tail bytes)."""
    p = Path(path)
    if not p.is_dir():
        return f"hub:{path}"
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.name == "config.json" or f.suffix in (".safetensors", ".bin"):
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
                fh.seek(max(0, f.stat().st_size - (1 << 20)))
                h.update(fh.read())
    return h.hexdigest()[:16]


def problems_fingerprint(problems: list[Problem]) -> str:
    h = hashlib.sha256()
    for p in problems:
        h.update(f"{p.id}\x00{p.prompt}\x00{p.answer}\x01".encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("RLVR_CACHE", Path.home() / ".cache" / "rlvr")).expanduser()


def base_cache_key(
    base_path: str,
    problems: list[Problem],
    settings: EvalSettings,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    engine_batch: int | None = None,
    engine: str = "hf",
) -> dict[str, Any]:
    """Everything that decides the base's samples: the checkpoint, the dtype and device type it
    samples in (a CUDA generator draws other numbers than the CPU one), the problems, the sampling
    settings and seed, and how the problems are cut into seeded generate() calls (`sample_rows`).
    Not the number of processes: the rows do not depend on it. The sampling engine when it is not
    hf (vLLM draws other samples from the same seeds); hf's keys are unchanged. The hf engine's sampler
    when it draws other samples than generate's (eval.sampler: lean; shared_prefill draws generate's)."""
    from rlvr.sampler import SAME_DRAWS_AS_HF

    per_call = problems_per_call(settings)
    per_generate = min(per_call * settings.n, engine_batch or settings.batch_size or DEFAULT_BATCH)
    own_draws = engine == "hf" and settings.sampler not in SAME_DRAWS_AS_HF
    return (
        ({"engine": engine} if engine != "hf" else {})
        | ({"sampler": settings.sampler} if own_draws else {})
        | {
            "model": model_fingerprint(base_path),
            "problems": problems_fingerprint(problems),
            "sampling": {
                **settings.sampling_key(),
                "max_new_tokens": settings.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
            },
            "dtype": str(dtype).removeprefix("torch."),
            "device": torch.device(device).type,
            "draw": {"seeded_per_call": "v2", "problems_per_call": per_call, "sequences_per_generate": per_generate},
        }
    )


def base_cache_path(base_path: str, problems: list[Problem], settings: EvalSettings, **how) -> Path:
    """The cache file of the base's samples (`base_cache_key`; `how`: dtype, device, engine_batch)."""
    key = json.dumps(base_cache_key(base_path, problems, settings, **how), sort_keys=True)
    return cache_root() / "eval" / f"base-{hashlib.sha256(key.encode()).hexdigest()[:20]}.jsonl"


# ---------------------------------------------------------------- metrics


def counts(rows: list[dict], order: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-problem n and c in `order` (problem ids)."""
    n = {pid: 0 for pid in order}
    c = dict(n)
    for r in rows:
        if r["problem_id"] in n:
            n[r["problem_id"]] += 1
            c[r["problem_id"]] += int(r["correct"])
    missing = [pid for pid in order if n[pid] == 0]
    if missing:
        raise ValueError(f"{len(missing)} problems have no samples (e.g. {missing[0]!r})")
    return np.array([n[p] for p in order]), np.array([c[p] for p in order])


def model_metrics(
    rows: list[dict], order: list[str], settings: EvalSettings, ks: list[int] | None = None, *, maj: bool = True
) -> dict[str, Any]:
    """Everything that needs one model's samples only (maj@k, the slow one, unless `maj` is False)."""
    n, c = counts(rows, order)
    ks = ks or sorted(pass_at_k_curve(n, c).keys())
    boot = bootstrap_pass_at_k(n, c, ks, resamples=settings.resamples, seed=settings.seed)
    hygiene = summarize_samples(rows)
    by_problem: dict[str, list[dict]] = {pid: [] for pid in order}
    for r in rows:
        if r["problem_id"] in by_problem:
            by_problem[r["problem_id"]].append(r)
    answers = [[r["answer"] for r in by_problem[p]] for p in order]
    correct = [[bool(r["correct"]) for r in by_problem[p]] for p in order]
    majority = {k: maj_at_k(answers, correct, k, seed=settings.seed) for k in ks if k <= 64} if maj else {}
    return {
        "problems": len(order),
        "samples": int(n.sum()),
        "n_min": int(n.min()),
        "n_max": int(n.max()),
        "pass_at_k": {k: {"mean": m, "lo": lo, "hi": hi} for k, (m, lo, hi) in boot.items()},
        "interval": interval_name(),  # how lo and hi (and dSE's) were made: the library's default bootstrap
        "avg_at_n": float(np.mean(c / n)),
        "mean_reward": hygiene["mean_reward"],
        "maj_at_k": majority,
        "cover_at_tau": {tau: cover_at_tau(n, c, tau) for tau in (0.5, 1.0)},
        "accuracy_histogram": accuracy_histogram(n, c),
        "distinct_answers_mean": hygiene["distinct_answers_mean"],
        "length_mean": hygiene["length_mean"],
        "length_correct_mean": hygiene["length_correct_mean"],
        "length_wrong_mean": hygiene["length_wrong_mean"],
        "truncation_rate": hygiene["truncation_rate"],
        "extraction_failure_rate": hygiene["extraction_failure_rate"],
        "counts": {"n": n.tolist(), "c": c.tolist()},
    }


def comparison_metrics(
    model_rows: list[dict], base_rows: list[dict], order: list[str], settings: EvalSettings
) -> dict[str, Any]:
    """dSE, k*, coverage: the model against its base on the same problems."""
    import warnings

    mn, mc = counts(model_rows, order)
    bn, bc = counts(base_rows, order)
    K = min(settings.K, int(bn.min()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dse = sampling_efficiency_gap(bn, bc, mn, mc, K=settings.K, resamples=settings.resamples, seed=settings.seed)
    notes = [str(w.message) for w in caught]
    cov = coverage(bc, mc, ids=order)
    k_star = crossover_k_from_counts(bn, bc, mn, mc)  # at every k, not only the tables' powers of two
    return {"dse": dse, "K": K, "crossover_k": k_star, "coverage": cov, "notes": notes}


# ---------------------------------------------------------------- the eval


def _gather(rows: list[dict], world: int) -> list[dict]:
    if world == 1:
        return rows
    parts: list = [None] * world
    torch.distributed.all_gather_object(parts, rows)
    return [r for p in parts for r in p]


def _from_rank0(obj: Any, world: int) -> Any:
    if world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _in_order(rows: list[dict], order: list[str]) -> list[dict]:
    """Rows sorted by problem (in eval-set order), then sample: the same for any number of processes."""
    pos = {pid: i for i, pid in enumerate(order)}
    return sorted(rows, key=lambda r: (pos.get(r["problem_id"], len(pos)), r["sample"]))


class _Models:
    """Engines for models given by path, loaded once, on `device`, in `dtype`, with the rollout
    engine `kind` (hf, or vllm: one vLLM at a time, the previous one closed before the next loads;
    the perplexity terms use the HF models, kept in `hf`)."""

    def __init__(self, settings: EvalSettings, device: str, dtype: str, kind: str = "hf"):
        self.settings, self.device, self.dtype, self.kind, self.loaded = settings, device, dtype, kind, {}
        self.hf: dict[str, tuple[Any, Any]] = {}

    def engine(self, model):
        if not isinstance(model, (str, Path)):
            return model  # an engine already (the trainer's, or a server's)
        from rlvr.rollout import build_engine

        key = str(model)
        if key not in self.loaded:
            if self.kind != "hf":
                self.close()
            m, tok = self.model_and_tokenizer(key)
            self.loaded[key] = build_engine(self.kind, m, tok, batch_size=self.settings.batch_size or DEFAULT_BATCH)
        return self.loaded[key]

    def model_and_tokenizer(self, model) -> tuple[Any, Any] | None:
        """The HF model and tokenizer of `model` (a path, or an engine holding one); None for a server."""
        if isinstance(model, (str, Path)):
            from rlvr.models import load_model_and_tokenizer, resolve_model_path

            key = str(model)
            if key not in self.hf:
                m, tok = load_model_and_tokenizer(resolve_model_path(key), self.dtype)
                self.hf[key] = (m.to(self.device), tok)
            return self.hf[key]
        m = getattr(model, "model", None)
        if m is None and _engine_kind(model) == "vllm":
            m = model._model  # the policy the trainer's vLLM samples (its last sync_weights)
        return (m, model.tokenizer) if isinstance(m, torch.nn.Module) else None

    def close(self) -> None:
        for k in list(self.loaded):
            e = self.loaded.pop(k)
            if hasattr(e, "close"):
                e.close()


def _engine_kind(engine) -> str:
    """hf or vllm (the names `rlvr eval --engine` takes) for rlvr's engines, else the class name (an hf engine
    of any sampler is hf: eval.sampler decides how the eval samples with it)."""
    from rlvr.rollout import HFEngine

    if isinstance(engine, HFEngine):
        return "hf"
    name = type(engine).__name__
    return {"VLLMEngine": "vllm"}.get(name, name)


def _dtype_device(engine, dtype: str, device: str) -> tuple[str, str]:
    """What an engine samples in: its model's parameters' dtype and device type."""
    model = getattr(engine, "model", None)
    if isinstance(model, torch.nn.Module):
        p = next(model.parameters())
        return str(p.dtype).removeprefix("torch."), p.device.type
    return dtype, torch.device(device).type


def evaluate(
    problems: list[Problem],
    settings: EvalSettings,
    score: Callable,
    *,
    model=None,
    samples: list[str] | None = None,
    base: str | None = None,
    base_samples: list[str] | None = None,
    model_is_base: bool = False,
    sample_base: bool = True,
    out_dir: str | Path | None = None,
    label: str = "model",
    model_path: str | None = None,
    desc: str | None = None,
    rank: int = 0,
    world: int = 1,
    device: str | None = None,
    dtype: str = "float32",
    progress: bool = True,
    maj: bool = True,
    engine: str = "hf",
) -> dict[str, Any]:
    """The eval of one model against its base, on `settings.problems` (or all) of `problems`.

    model: a rollout engine (the trainer's policy, a `ServerEngine`) or a checkpoint path to
        sample; or `samples`, JSONL files of completions made elsewhere.
    engine: what samples the checkpoints given by path (model and base): hf or vllm.
    base: the base checkpoint. Its samples come from `base_samples`, else the cache
        (`base_cache_path`), else they are drawn and cached (unless `sample_base` is
        False: then there is no comparison). With `model_is_base` the model is the base:
        its samples are the base's, read from or written to the cache.
    rank, world: this process and the number of processes (torch.distributed). Each
        draws its share of the seeded calls (`sample_rows`); every process returns the
        same result; files are written by rank 0 only.
    maj: maj@k, the one slow metric (seconds for 256 problems x 16 samples); the
        in-training eval leaves it out.
    out_dir: if given, every sample (samples_<label>.jsonl, samples_base.jsonl),
        metrics.json, plots and summary.md, and perplexity cross-terms when
        `settings.perplexity` and both models are at hand.
    Returns metrics.json's content: spec (the settings), model_metrics, base_metrics,
    comparison (dSE, k*, coverage), base_cache {path, hit}, perplexity, wall_time_s.
    """
    t0 = time.time()
    if settings.problems:
        problems = problems[: settings.problems]
    run = _EvalRun(
        problems,
        settings,
        score,
        base=base,
        rank=rank,
        world=world,
        out_dir=out_dir,
        dtype=dtype,
        device=device or ("cuda" if torch.cuda.is_available() else "cpu"),
        progress=progress,
        engine=engine,
    )
    result: dict[str, Any] = {
        "spec": settings.model_dump(),
        "label": label,
        "model_path": model_path
        if model_path is not None
        else (str(model) if isinstance(model, (str, Path)) else None),
        "base_path": base,
    }
    if samples:
        rows = read_samples(samples, problems, score, settings.threshold)
    elif model is None:
        raise ValueError("rlvr eval needs --model or --samples")
    elif model_is_base:
        if base is None:
            raise ValueError("model_is_base needs the base's path (base=...) for its cache key")
        rows, result["base_cache"] = run.cached_or_drawn(model, desc or f"sampling {label}")
    else:
        rows = run.draw(run.models.engine(model), desc or f"sampling {label}")
    run.write_rows(f"samples_{label}.jsonl", rows)
    result["model_metrics"] = model_metrics(rows, run.order, settings, maj=maj)

    base_rows = None
    if base_samples:
        base_rows = read_samples(base_samples, problems, score, settings.threshold)
    elif base is not None and not model_is_base:
        base_rows, result["base_cache"] = run.cached_or_drawn(None, "sampling base", draw=sample_base)
    if base_rows is not None:
        run.write_rows("samples_base.jsonl", base_rows)
        result["base_metrics"] = model_metrics(base_rows, run.order, settings, maj=maj)
        result["comparison"] = comparison_metrics(rows, base_rows, run.order, settings)
        if settings.perplexity and run.out is not None and run.main and model is not None and not samples and base:
            m, b = run.models.model_and_tokenizer(model), run.models.model_and_tokenizer(run.base_dir())
            if m is not None:  # not for a server's model
                special = not problems or adds_special_tokens(problems[0])  # as the engines tokenized the prompts
                result["perplexity"] = perplexity_terms(b, m, rows, base_rows, settings, special)
    if engine != "hf":
        run.models.close()  # vLLM's memory and process groups, now
    result["wall_time_s"] = time.time() - t0
    if run.out is not None and run.main:
        (run.out / "metrics.json").write_text(json.dumps(_jsonable(result), indent=1))
        from .report import write_eval_report

        write_eval_report(run.out, result)
    return result


class _EvalRun:
    """The sampling side of one `evaluate` call: the engines, the seeded draws shared across
    processes, the base's cache (read by rank 0, one decision for every process) and the files."""

    def __init__(
        self,
        problems: list[Problem],
        settings: EvalSettings,
        score: Callable,
        *,
        base: str | None,
        rank: int,
        world: int,
        out_dir: str | Path | None,
        dtype: str,
        device: str,
        progress: bool,
        engine: str = "hf",
    ):
        self.problems, self.settings, self.score, self.base = problems, settings, score, base
        self.rank, self.world, self.main, self.progress = rank, world, rank == 0, progress
        self.dtype, self.device = dtype, device
        self.order = [p.id for p in problems]
        self.models = _Models(settings, device, dtype, engine)
        self.out = Path(out_dir) if out_dir is not None else None
        if self.out is not None and self.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self._base_dir: str | None = None

    def base_dir(self) -> str:
        """'tiny' -> its directory (built if missing), only once it is needed."""
        if self._base_dir is None:
            from rlvr.models import resolve_model_path

            self._base_dir = resolve_model_path(str(self.base))
        return self._base_dir

    def draw(self, engine, what: str) -> list[dict]:
        rows = sample_rows(
            engine,
            self.problems,
            self.settings,
            self.score,
            desc=what,
            progress=self.progress and self.main,
            rank=self.rank,
            world=self.world,
        )
        return _in_order(_gather(rows, self.world), self.order)

    def cached_or_drawn(self, model, what: str, draw: bool = True) -> tuple[list[dict] | None, dict[str, Any]]:
        """The base's rows, sampled by `model` (an engine or path; None: the base, loaded here):
        from the cache if there, else drawn and cached (unless not `draw`: None)."""
        engine = self.models.engine(model) if model is not None else None
        dt, dev = _dtype_device(engine, self.dtype, self.device)
        path = base_cache_path(
            self.base_dir(),
            self.problems,
            self.settings,
            dtype=dt,
            device=dev,
            engine_batch=getattr(engine, "batch_size", None),
            engine=self.models.kind if engine is None else _engine_kind(engine),
        )
        rows = (read_jsonl(path) if path.is_file() else None) if self.main else None
        rows = _from_rank0(rows, self.world)  # one decision for every process
        info = {"path": str(path), "hit": rows is not None}
        if rows is not None:
            return apply_threshold(rows, self.settings.threshold), info
        if not draw:
            return None, info
        rows = self.draw(engine or self.models.engine(self.base_dir()), what)
        if self.main:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_jsonl(path, rows)
        return rows, info

    def write_rows(self, name: str, rows: list[dict]) -> None:
        if self.out is not None and self.main:
            write_jsonl(self.out / name, rows)


def evaluate_run(
    cfg,
    *,
    model: str | None = None,
    samples: list[str] | None = None,
    base: str | None = None,
    base_samples: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    out_dir: str | Path,
    label: str = "model",
    progress: bool = True,
    engine: str = "hf",
    server: str | None = None,
    server_model: str | None = None,
) -> dict[str, Any]:
    """`evaluate` of a checkpoint (or samples) of a run: its held-out problems, reward and eval
    settings (the full eval's: n = eval.final_n or eval.n) from the run config `cfg`, then
    `overrides` (EvalSettings fields). What `rlvr eval` and each sweep cell run. `engine` samples
    the checkpoints (hf or vllm); `server`, an OpenAI-compatible URL, samples the model instead
    (eval/server.py; `server_model`: its model name, default the server's one)."""
    from rlvr.data import load_problems  # the run's problems and reward, built as training builds them
    from rlvr.models import configure_cpu_threads, resolve_model_path
    from rlvr.rewards import RewardRunner, build_reward

    configure_cpu_threads(cfg.train.cpu_threads)
    tokenizer = None
    if cfg.data.template == "chat":  # the same prompt for model and base: the evaluated model's chat template
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model or cfg.model.path))
    _, problems = load_problems(cfg.data, tokenizer)
    settings = cfg.eval.settings(cfg.rollout, final=True, **(overrides or {}))
    if cfg.data.too_long != "error":  # the held-out prompts filtered or cut as the run's training did them
        from rlvr.data import fit_prompts_for

        problems = fit_prompts_for(
            problems, cfg.data.too_long, resolve_model_path(model or cfg.model.path), settings.max_new_tokens
        )
    if engine == "vllm":
        from rlvr.vllm_engine import require_vllm

        require_vllm()
    model_path = None
    if server is not None:
        from .server import ServerEngine

        model, model_path = ServerEngine(server, server_model), server
    return evaluate(
        problems,
        settings,
        RewardRunner(build_reward(cfg.reward, cfg.data)),
        model=model,
        model_path=model_path,
        engine=engine,
        samples=samples,
        base=base,
        base_samples=base_samples,
        out_dir=out_dir,
        label=label,
        dtype=cfg.model.dtype,
        progress=progress,
    )


def perplexity_terms(
    base, model, rows: list[dict], base_rows: list[dict], settings: EvalSettings, add_special_tokens: bool = True
) -> dict:
    """PPL_base(Y_base), PPL_base(Y_model), PPL_model(Y_model) and mean token entropies, on the
    first `ppl_per_problem` samples of each problem (empty responses, which have no perplexity,
    are left out of the values)."""
    from .perplexity import perplexity_cross_terms

    def pick(rs):
        seen: dict[str, int] = {}
        out = []
        for r in rs:
            if seen.get(r["problem_id"], 0) < settings.ppl_per_problem:
                seen[r["problem_id"]] = seen.get(r["problem_id"], 0) + 1
                out.append(r)
        return out

    (bm, btok), (mm, mtok) = base, model
    ys_m, ys_b = pick(rows), pick(base_rows)
    terms = perplexity_cross_terms(
        bm,
        mm,
        btok,
        [r["prompt"] for r in ys_m],
        [r["text"] for r in ys_b],
        [r["text"] for r in ys_m],
        base_prompts=[r["prompt"] for r in ys_b],
        model_tokenizer=mtok,
        add_special_tokens=add_special_tokens,
    )
    arrays = {k: terms[k] for k in ("base_on_base", "base_on_model", "model_on_model")}
    return {
        "median": {k: terms["median"][k] for k in arrays},
        "values": {k: [float(x) for x in v if np.isfinite(x)] for k, v in arrays.items()},
        "entropy": {"base": terms["entropy"]["base"], "model": terms["entropy"]["model"]},
    }


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and x != x:
        return None
    return x
