"""`rlvr eval`: did training expand what the model solves, or sharpen what the base sampled?

Samples n completions per held-out problem from a model and from its base (the
base's samples are cached, keyed by model, eval set and sampling settings),
scores them with the task's verifier, stores every sample, and writes
metrics.json, PNG plots and summary.md. It also scores completions made
elsewhere (a JSONL from vLLM, another framework), so the metrics never depend on
who sampled.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from rlvr.tasks import Problem

from .metrics import (accuracy_histogram, bootstrap_pass_at_k, cover_at_tau, coverage, crossover_k, maj_at_k,
                      sampling_efficiency_gap, summarize_samples)
from .passk import pass_at_k_curve

SAMPLE_KEYS = ("problem_id", "sample", "text", "tokens", "finish_reason", "answer", "reward", "correct")


@dataclass
class EvalSpec:
    n: int = 16  # samples per problem
    temperature: float = 0.6  # the paper's eval sampling
    top_p: float = 0.95
    max_new_tokens: int = 16
    seed: int = 0
    K: int = 256  # dSE = pass@K(base) - pass@1(model), K clipped to n
    threshold: float = 1.0  # reward >= threshold counts as correct
    resamples: int = 1000  # bootstrap
    batch_size: int = 256  # sequences per generate() call
    perplexity: bool = True
    ppl_per_problem: int = 4  # samples per problem in the perplexity cross-terms

    def sampling_key(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("n", "temperature", "top_p", "max_new_tokens", "seed")}


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


def sample_rows(engine, problems: list[Problem], spec: EvalSpec, score: Callable, *, desc: str = "sampling",
                progress: bool = True) -> list[dict[str, Any]]:
    """n samples per problem from `engine`, scored: one dict per sample (SAMPLE_KEYS + prompt)."""
    from tqdm.auto import tqdm

    from rlvr.rollout import Sampling

    torch.manual_seed(spec.seed)
    sampling = Sampling(temperature=spec.temperature, top_p=spec.top_p, top_k=0, max_new_tokens=spec.max_new_tokens)
    per_call = max(1, spec.batch_size // spec.n)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(problems), desc=desc, disable=not progress, dynamic_ncols=True)
    for s in range(0, len(problems), per_call):
        chunk = problems[s:s + per_call]
        batch = engine.generate(chunk, spec.n, sampling)
        rewards, _ = score(batch.problems, batch.completions)
        tokens = batch.response_mask.sum(-1).long().tolist()
        for i, (p, text) in enumerate(zip(batch.problems, batch.completions)):
            rows.append({
                "problem_id": p.id, "sample": i % spec.n, "prompt": p.prompt, "text": text, "tokens": tokens[i],
                "finish_reason": "length" if bool(batch.truncated[i]) else "stop",
                "answer": extract_answer(text), "reward": float(rewards[i]),
                "correct": bool(rewards[i] >= spec.threshold),
            })
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
            raise FileNotFoundError(f"samples file not found: {path}")
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {line_no}: not JSON: {e}") from None
            text = r.get("text", r.get("completion"))
            if not isinstance(text, str):
                raise ValueError(f"{path} line {line_no}: needs a string 'text' (or 'completion')")
            p = by_id.get(r.get("problem_id")) or by_prompt.get(r.get("prompt"))
            if p is None:
                raise ValueError(f"{path} line {line_no}: problem_id {r.get('problem_id')!r} / prompt matches no "
                                 f"problem of this eval set")
            row = {"problem_id": p.id, "sample": r.get("sample", 0), "prompt": p.prompt, "text": text,
                   "tokens": int(r.get("tokens", len(text.split()))), "finish_reason": r.get("finish_reason", "stop"),
                   "answer": r.get("answer", extract_answer(text)), "reward": r.get("reward")}
            rows.append(row)
            if row["reward"] is None:
                todo.append((row, p))
    if todo:
        rewards, _ = score([p for _, p in todo], [r["text"] for r, _ in todo])
        for (row, _), rw in zip(todo, rewards.tolist()):
            row["reward"] = float(rw)
    for row in rows:
        row["correct"] = bool(row["reward"] >= threshold)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
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


def base_cache_path(base_path: str, problems: list[Problem], spec: EvalSpec) -> Path:
    key = json.dumps({"model": model_fingerprint(base_path), "problems": problems_fingerprint(problems),
                      "sampling": spec.sampling_key()}, sort_keys=True)
    return cache_root() / "eval" / f"base-{hashlib.sha256(key.encode()).hexdigest()[:20]}.jsonl"


def cached_base_rows(base_path: str, problems: list[Problem], spec: EvalSpec, make: Callable[[], list[dict]]) -> tuple[list[dict], bool]:
    """The base model's samples for this eval set and sampling: from the cache, or made and cached."""
    path = base_cache_path(base_path, problems, spec)
    if path.is_file():
        return apply_threshold(read_jsonl(path), spec.threshold), True
    rows = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, rows)
    return rows, False


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


def model_metrics(rows: list[dict], order: list[str], spec: EvalSpec, ks: list[int] | None = None) -> dict[str, Any]:
    """Everything that needs one model's samples only."""
    n, c = counts(rows, order)
    ks = ks or sorted(pass_at_k_curve(n, c).keys())
    boot = bootstrap_pass_at_k(n, c, ks, resamples=spec.resamples, seed=spec.seed)
    hygiene = summarize_samples(rows)
    by_problem: dict[str, list[dict]] = {pid: [] for pid in order}
    for r in rows:
        if r["problem_id"] in by_problem:
            by_problem[r["problem_id"]].append(r)
    answers = [[r["answer"] for r in by_problem[p]] for p in order]
    correct = [[bool(r["correct"]) for r in by_problem[p]] for p in order]
    maj = {k: maj_at_k(answers, correct, k, seed=spec.seed) for k in ks if k <= 64}
    return {
        "problems": len(order), "samples": int(n.sum()), "n_min": int(n.min()), "n_max": int(n.max()),
        "pass_at_k": {k: {"mean": m, "lo": lo, "hi": hi} for k, (m, lo, hi) in boot.items()},
        "avg_at_n": float(np.mean(c / n)), "maj_at_k": maj,
        "cover_at_tau": {tau: cover_at_tau(n, c, tau) for tau in (0.5, 1.0)},
        "accuracy_histogram": accuracy_histogram(n, c),
        "mean_entropy": hygiene["mean_entropy"],
        "distinct_answers_mean": hygiene["distinct_answers_mean"],
        "length_mean": hygiene["length_mean"], "length_correct_mean": hygiene["length_correct_mean"],
        "length_wrong_mean": hygiene["length_wrong_mean"], "truncation_rate": hygiene["truncation_rate"],
        "extraction_failure_rate": hygiene["extraction_failure_rate"],
        "counts": {"n": n.tolist(), "c": c.tolist()},
    }


def comparison_metrics(model_rows: list[dict], base_rows: list[dict], order: list[str], spec: EvalSpec) -> dict[str, Any]:
    """dSE, k*, coverage: the model against its base on the same problems."""
    import warnings

    mn, mc = counts(model_rows, order)
    bn, bc = counts(base_rows, order)
    K = min(spec.K, int(bn.min()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dse = sampling_efficiency_gap(bn, bc, mn, mc, K=spec.K, resamples=spec.resamples, seed=spec.seed)
    notes = [str(w.message) for w in caught]
    ks = sorted(set(pass_at_k_curve(bn, bc).keys()) & set(pass_at_k_curve(mn, mc).keys()))
    from .passk import mean_pass_at_k

    base_curve = {k: mean_pass_at_k(bn, bc, k) for k in ks}
    model_curve = {k: mean_pass_at_k(mn, mc, k) for k in ks}
    cov = coverage(bc, mc, ids=order)
    return {"dse": dse, "K": K, "crossover_k": crossover_k(base_curve, model_curve), "coverage": cov, "notes": notes}


# ---------------------------------------------------------------- the command


def run_eval(
    *,
    model_path: str | None,
    base_path: str | None,
    problems: list[Problem],
    spec: EvalSpec,
    score: Callable,
    out_dir: str | Path,
    model_samples: list[str] | None = None,
    base_samples: list[str] | None = None,
    label: str = "model",
    progress: bool = True,
) -> dict[str, Any]:
    """Sample (or read) both models' completions, compute every metric, write the eval directory."""
    from rlvr.models import load_model_and_tokenizer, resolve_model_path
    from rlvr.rollout import HFEngine

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = [p.id for p in problems]
    t0 = time.time()
    loaded: dict[str, tuple] = {}

    def load(path: str):
        if path not in loaded:
            loaded[path] = load_model_and_tokenizer(resolve_model_path(path))
        return loaded[path]

    def sample(path: str, desc: str) -> list[dict]:
        model, tok = load(path)
        return sample_rows(HFEngine(model, tok, batch_size=spec.batch_size), problems, spec, score, desc=desc,
                           progress=progress)

    if model_samples:
        rows = read_samples(model_samples, problems, score, spec.threshold)
    elif model_path:
        rows = sample(model_path, f"sampling {label}")
    else:
        raise ValueError("rlvr eval needs --model or --samples")
    write_jsonl(out / f"samples_{label}.jsonl", rows)
    result: dict[str, Any] = {"spec": asdict(spec), "label": label, "model_path": model_path, "base_path": base_path,
                              "model_metrics": model_metrics(rows, order, spec)}

    base_rows = None
    if base_samples:
        base_rows = read_samples(base_samples, problems, score, spec.threshold)
    elif base_path:
        resolved = resolve_model_path(base_path)
        base_rows, hit = cached_base_rows(resolved, problems, spec, lambda: sample(base_path, "sampling base"))
        result["base_cache"] = {"path": str(base_cache_path(resolved, problems, spec)), "hit": hit}
    if base_rows is not None:
        write_jsonl(out / "samples_base.jsonl", base_rows)
        result["base_metrics"] = model_metrics(base_rows, order, spec)
        result["comparison"] = comparison_metrics(rows, base_rows, order, spec)
        if spec.perplexity and model_path and base_path:
            result["perplexity"] = perplexity_terms(load(base_path), load(model_path), rows, base_rows, order, spec)
    result["wall_time_s"] = time.time() - t0
    (out / "metrics.json").write_text(json.dumps(_jsonable(result), indent=1))
    from .report import write_eval_report

    write_eval_report(out, result)
    return result


def perplexity_terms(base, model, rows: list[dict], base_rows: list[dict], order: list[str], spec: EvalSpec) -> dict:
    """PPL_base(Y_base), PPL_base(Y_model), PPL_model(Y_model) and mean entropies, on the first
    `ppl_per_problem` samples of each problem."""
    from .perplexity import sequence_perplexity

    def pick(rs):
        seen: dict[str, int] = {}
        out = []
        for r in rs:
            if seen.get(r["problem_id"], 0) < spec.ppl_per_problem and r["text"].strip():
                seen[r["problem_id"]] = seen.get(r["problem_id"], 0) + 1
                out.append(r)
        return out

    (bm, btok), (mm, mtok) = base, model
    ys_m, ys_b = pick(rows), pick(base_rows)
    pm = [r["prompt"] for r in ys_m]
    pb = [r["prompt"] for r in ys_b]
    base_on_base, ent_base = sequence_perplexity(bm, btok, pb, [r["text"] for r in ys_b], return_entropy=True)
    base_on_model = sequence_perplexity(bm, btok, pm, [r["text"] for r in ys_m])
    model_on_model, ent_model = sequence_perplexity(mm, mtok, pm, [r["text"] for r in ys_m], return_entropy=True)
    arrays = {"base_on_base": base_on_base, "base_on_model": base_on_model, "model_on_model": model_on_model}
    return {
        "median": {k: float(np.nanmedian(v)) for k, v in arrays.items()},
        "values": {k: v.tolist() for k, v in arrays.items()},
        "entropy": {"base": float(np.nanmean(ent_base)), "model": float(np.nanmean(ent_model))},
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
