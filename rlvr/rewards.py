"""Verifiable rewards: a float per (problem, completion), one interface for training and eval.

A reward function takes the batch's problems and completions and returns one
score per sample (`RewardFn`). The `reward:` config section names any number of
them, built in or imported by path, and `build_reward` sums them with weights;
each is logged on its own as `reward/<name>`.

Built in:

* `reasoning_gym`: the task's own reasoning-gym `score_answer`.
* `math_accuracy`: Hugging Face math-verify, `verify(parse(gold), parse(answer))`
  (gold first: the order matters), `\\boxed{}` preferred; under template r1 the
  answer is the <answer> tag's, a bare one read as if boxed (`math_answer`), and a
  text gold (`yes`, `\\text{even}`) is compared as words. math-verify bounds its
  time with `signal.alarm`, which only works on the main thread, so its timeouts
  are off and grading runs in a pool of worker processes instead
  (`rlvr.sandbox.WorkerPool`); a grade past `reward.timeout` is killed.
* `math_format`: the answer is where the template asked for it: a non-empty
  `\\boxed{}`, or (template r1) `<think>...</think> <answer>...</answer>`.
* `code_tests`: the program in the completion (its last ```python block, else
  the whole text) run against the problem's tests in `rlvr.sandbox`; 1 when
  every test passes.
* `module.path:function`: any TRL-convention reward function,
  `f(prompts, completions, **columns) -> list[float | None]`; the columns are
  `answer`, `tests`, `entry` (reasoning-gym) and `data.extra_columns`.

A verifier that raises or times out scores 0 for that sample and is counted
(`reward/errors`, `reward/timeouts`); its traceback is shown once; it never
stops training. None (TRL's "no opinion") adds nothing to the weighted sum.
"""

from __future__ import annotations

import functools
import importlib
import re
import threading
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rlvr.tasks import Problem, score_reasoning_gym
from rlvr.templates import ANSWER_STYLE

if TYPE_CHECKING:  # torch is imported only where tensors are made: grading workers import this module
    import torch

RewardFn = Callable[[list[Problem], list[str]], list[float]]


def reasoning_gym_reward(problems: list[Problem], completions: list[str]) -> list[float]:
    """The task's own reasoning-gym `score_answer`."""
    return [score_reasoning_gym(c, p) for p, c in zip(problems, completions)]


def _error(msg: str) -> Exception:
    from rlvr.errors import ConfigError

    return ConfigError(msg)


# ------------------------------------------------------------ answer extraction


def _last_boxed_span(text: str) -> tuple[int, int] | None:
    """(start, end) of the last \\boxed{...} (or \\fbox{...})'s content, braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return i, j
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), braces balanced; None if there is none."""
    span = _last_boxed_span(text)
    return text[span[0]:span[1]] if span else None


_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
_R1_FORMAT = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?\S.*?</answer>\s*$", re.S)


def answer_tag(text: str) -> str | None:
    """Content of the last <answer>...</answer>, stripped; None if there is none."""
    found = _ANSWER_TAG.findall(text)
    return found[-1].strip() if found else None


# math delimiters math-verify's LaTeX extraction looks for ($ not escaped as \$)
_MATH_MARK = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed\b|\\fbox\b")
_WHOLE_MATH = re.compile(r"^\s*(?:\$\$(.*)\$\$|(?<!\\)\$(.*)(?<!\\)\$|\\\((.*)\\\)|\\\[(.*)\\\])\s*\.?\s*$", re.S)
_LEAD = re.compile(r"^\s*(?:so,?\s+|thus,?\s+|therefore,?\s+|hence,?\s+)?(?:the\s+)?(?:final\s+)?answer\s*(?:is\s*:?|:|=)\s*", re.I)
# ASCII function names LaTeX would read as products of letters (pi -> p*i); sqrt(..) it reads already
_ASCII_FN = re.compile(r"(?<![\\A-Za-z])(pi|ln|log|exp|sin|cos|tan|cot|sec|csc)(?![A-Za-z])")


def _bare_to_latex(answer: str) -> str:
    """A bare final answer as the LaTeX math-verify should read: no lead-in, no closing period, ASCII names as commands."""
    s = _LEAD.sub("", answer.strip()).strip()
    while s.endswith(".") and not s.endswith(".."):  # "376, 625." reads as 625 alone
        s = s[:-1].rstrip()
    if "\\" not in s:
        s = _ASCII_FN.sub(r"\\\1", s).replace("**", "^")
    return s.replace("\\varnothing", "\\emptyset")


def math_answer(completion: str, style: str = "boxed") -> str | None:
    """The text of `completion` that math-verify grades, by the template's answer style (templates.ANSWER_STYLE).

    * `boxed`: the whole completion (math-verify prefers the last \\boxed{}, and finds an
      unboxed final answer too), its last box's content tidied as a bare answer is.
    * `r1`: the last <answer> tag's content, None if there is none or it is empty. A bare
      answer (`2^{n-1}`, `376, 625`, `[0, 1)`, `yes`, `x = 3`, or one wholly in `$...$`)
      is put in \\boxed{}, so it is read as LaTeX exactly as a boxed answer is; an answer
      with its own math delimiters inside prose (`the answer is $5$`) is left to math-verify.
    """
    if style != "r1":
        span = _last_boxed_span(completion)
        if span is None:
            return completion
        return completion[:span[0]] + _bare_to_latex(completion[span[0]:span[1]]) + completion[span[1]:]
    content = answer_tag(completion)
    if not content:
        return None
    whole = _WHOLE_MATH.match(content)
    if whole:
        inner = next(g for g in whole.groups() if g is not None)
        if not _MATH_MARK.search(inner):
            content = inner
    if _MATH_MARK.search(content):
        return math_answer(content, "boxed")  # a \\boxed{} in the tag is tidied as in a boxed completion
    return "\\boxed{" + _bare_to_latex(content) + "}"


_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)
_OPEN_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*)$", re.S | re.I)


def extract_code(text: str) -> tuple[str, bool]:
    """(code, fenced): the last ```python block, a truncated last block, or the whole text."""
    blocks = _FENCE.findall(text)
    if blocks:
        return blocks[-1], True
    m = _OPEN_FENCE.search(text)
    if m:
        return m.group(1), True
    return text, False


def build_program(problem: Problem, completion: str) -> str:
    """Solution + tests as one Python program (tests given as source or as a list of asserts).

    A problem with `code_prefix` (HumanEval's function header) has it put before
    the code, so both a bare body and a whole function work. Tests that define
    HumanEval's `check` are called on `entry_point` when they do not call it.
    """
    program, tests = _program_and_tests(problem, completion)
    return program + "\n\n" + tests + "\n"


def _program_and_tests(problem: Problem, completion: str) -> tuple[str, str]:
    code, fenced = extract_code(completion)
    meta = problem.metadata
    prefix = meta.get("code_prefix") or ""
    program = (prefix + "\n" + code) if (prefix and fenced) else prefix + code
    tests = meta.get("tests")
    if isinstance(tests, list):
        tests = "\n".join(tests)
    entry = meta.get("entry_point")
    if entry and "def check(" in tests and not re.search(r"^check\(", tests, re.M):
        tests += f"\n\ncheck({entry})\n"
    return program, tests


# ------------------------------------------------------------ math grading (runs in a worker process)


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout: int | None = None) -> list:
    """math-verify's reading of a gold answer: a bare one (no $, \\boxed) is read as a bare r1 answer is."""
    import logging

    from math_verify import parse

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" on every call
    text = gold if _MATH_MARK.search(gold) else "\\boxed{" + _bare_to_latex(gold) + "}"
    parsed = parse(text, parsing_timeout=timeout)
    return parsed or parse(gold, parsing_timeout=timeout)


_PLAIN_NUMBER = re.compile(r"\s*-?\d+(?:\.\d+)?\s*")
# what is not a variable in a gold's text: text blocks, environment and font names, commands, "and"/"or"
_NOT_VARIABLES = re.compile(r"\\(?:begin|end|mathbb|mathcal|mathfrak|mathscr)\s*\{[^{}]*\}|\\[A-Za-z]+|\\.|\b(?:and|or)\b")


def gold_problem(gold: str) -> str | None:
    """Why math-verify's reading of `gold` is not the answer written, or None when it reads fine.

    Degenerate readings: nothing (or no math) read; a word read as a product of its
    letters (`n mod 3`); a constant while the text has variables (ASCII `sum_(i=1)^n i^3`
    reads as 1, `\\gcd(a, b)` as 1); or something not a number that grades equal to 0, 1
    or -1 while the text writes no such number. Such a gold makes math_accuracy grade
    against the wrong value (`\\boxed{1}` scores 1). Runs in the calling process, with
    math-verify's own time limit when that is the main thread.
    """
    if _PLAIN_NUMBER.fullmatch(gold):
        return None
    return _gold_problem(gold, 5 if threading.current_thread() is threading.main_thread() else None)


@functools.lru_cache(maxsize=65536)
def _gold_problem(gold: str, timeout: int | None) -> str | None:
    from math_verify import parse, verify
    from sympy import Basic, MatrixBase, Symbol
    from sympy.core.function import AppliedUndef

    if not gold.strip():
        return "is empty"
    g = _parse_gold(gold, timeout)
    reading = next((x for x in g if isinstance(x, (Basic, MatrixBase))), None)
    if reading is None:
        return "is read as no math at all" + (f" (only the text {g[-1]!r})" if g else "")
    shown = str(reading) if len(str(reading)) <= 40 else str(reading)[:37] + "..."
    written = str(g[-1]) if isinstance(g[-1], str) else gold
    variables = _NOT_VARIABLES.sub(" ", _TEXT_MACRO.sub(" ", written))
    symbols = {str(x).lower() for x in reading.atoms(Symbol)}
    symbols |= {type(f).__name__.lower() for f in reading.atoms(AppliedUndef)}  # f(x): f
    if _words(gold) is None:  # a text answer is compared as words; in math, a word read letter by letter is lost
        for word in re.findall(r"[A-Za-z]{3,}", variables):
            if set(word.lower()) <= {x for x in symbols if len(x) == 1} | {"e", "i"}:  # E, I: constants
                return f"reads the word {word!r} as a product of its letters ({shown})"
    if symbols:
        return None
    letters = sorted(set(re.findall(r"[A-Za-z]", variables)) - {"e", "i"})
    if letters:
        return f"reads as {shown}: its variables {', '.join(letters)} are lost"
    # a number read from a text without letters is the number written (\\frac{7}{7} is 1); anything else
    # (a set, a relation, a truth value) that grades as 0, 1 or -1 where the text writes no such number is lost
    if "%" not in gold and not getattr(reading, "is_number", False):
        numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", gold)]
        for probe in (0, 1, -1):
            if abs(probe) not in numbers and verify(g, parse(f"\\boxed{{{probe}}}", parsing_timeout=timeout),
                                                     timeout_seconds=timeout):
                return f"reads as {probe}, a number it does not write"
    return None


_TEXT_MACRO = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|textsf|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}")
_WORDS = re.compile(r"[a-z]+(?:[ '-]+[a-z]+)*")


def _words(text: str, any_letters: bool = False) -> str | None:
    """A text answer (`yes`, `\\text{even}`, `Evelyn`, `infinitely many`) as lower-case words; None for math.

    Math-verify reads words as products of letters (`yes` -> E*s*y, `YES` -> e*s*y), so
    `yes` and `YES` differ and `no` equals `on`; text answers are compared as text instead.
    A bare letter or two (`x`, `ab`) is math unless written in \\text{} (or `any_letters`).
    """
    s = text.strip()
    while len(s) > 1 and s[0] == s[-1] == "$":
        s = s[1:-1].strip()
    wrapped = bool(_TEXT_MACRO.search(s))
    s = _TEXT_MACRO.sub(r"\1", s).strip().rstrip(".!").strip().lower()
    if not _WORDS.fullmatch(s):
        return None
    words = s.replace("-", " ").replace("'", " ").split()
    if any_letters or wrapped or s in ("yes", "no") or any(len(w) >= 3 for w in words):
        return " ".join(words)
    return None


def verify_math(gold: str, answer: str) -> float:
    """1.0 if math-verify finds `answer` (`math_answer`'s text of a completion) equal to `gold`, else 0.0.

    A text gold (`_words`) against a boxed text answer is compared as words. No time
    limit of its own (the caller bounds it); raises if the gold answer does not
    parse, which is a data error, not the model's.
    """
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" on every call
    g = _parse_gold(gold)
    if not g:
        raise ValueError(f"math-verify cannot parse the gold answer {gold!r}")
    want = _words(gold)
    boxed = last_boxed(answer)
    if want is not None and boxed is not None:
        said = _words(boxed, any_letters=True)  # against a text gold, "on" is a word too
        if said is not None:
            return float(said == want)
    return float(verify(g, parse(answer, parsing_timeout=None), timeout_seconds=None))


# ------------------------------------------------------------ config


class RewardFunctionConfig(BaseModel):
    """One term of the weighted sum: a built-in name or 'module:function', its weight, its options."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str = Field(description="built-in reward (reasoning_gym, math_accuracy, math_format, code_tests) "
                                  "or 'module.path:function' with TRL's reward-function signature")
    weight: float = Field(1.0, description="weight of this reward in the sum")

    @model_validator(mode="after")
    def _check(self) -> "RewardFunctionConfig":
        options = dict(self.model_extra or {})
        if ":" in self.name:
            if options:
                raise ValueError(f"{self.name!r} is a function by import path; it takes no options "
                                 f"(got {', '.join(options)})")
            return self
        if self.name not in BUILTINS:
            import difflib

            close = difflib.get_close_matches(self.name, BUILTINS, n=1)
            raise ValueError(f"unknown reward {self.name!r}" + (f"; did you mean '{close[0]}'?" if close else "")
                             + f" (built in: {', '.join(BUILTINS)}; or 'module.path:function')")
        try:
            BUILTINS[self.name].Options.model_validate(options)
        except ValidationError as e:
            msgs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            allowed = ", ".join(BUILTINS[self.name].Options.model_fields) or "none"
            raise ValueError(f"reward {self.name!r}: {msgs} (options: {allowed})") from None
        return self


class RewardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    functions: list[RewardFunctionConfig] = Field(
        default_factory=list,
        description="weighted rewards [{name, weight, options...}]; empty = the data's own: reasoning_gym for "
                    "reasoning-gym tasks, code_tests when data has tests, else math_accuracy")
    timeout: float = Field(10.0, gt=0.0, description="seconds per grade (a math-verify call, a program's run); past it the sample scores 0")
    workers: int = Field(2, ge=1, description="grading processes (math) and sandboxed programs (code) run at once")


# ------------------------------------------------------------ the rewards


@dataclass
class Scored:
    """One reward's verdicts on a batch, with what went wrong."""

    scores: list[float | None]
    errors: int = 0
    timeouts: int = 0
    tracebacks: list[str] = field(default_factory=list)


@dataclass
class _Context:
    template: str
    timeout: float
    workers: int


class _NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Reward:
    """A built-in reward: `score(problems, completions) -> Scored`."""

    Options: ClassVar[type[BaseModel]] = _NoOptions
    needs: ClassVar[str] = ""  # what the data must provide, checked in build_reward

    def __init__(self, ctx: _Context, options: BaseModel):
        self.ctx, self.options = ctx, options

    def score(self, problems: list[Problem], completions: list[str]) -> Scored:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _ExtractOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    extract: Literal["auto", "none", "boxed", "answer_tag"] = Field(
        "auto", description="what of the completion is the answer; auto: by data.template (plain: all of it)")


class _ReasoningGymOptions(_ExtractOptions):
    binary: bool = Field(False, description="1 only for a full score, else 0: reasoning-gym's scorers give partial "
                                            "credit to near misses (chain_sum: '-191' for 191 scores 0.75)")


class ReasoningGymReward(Reward):
    Options = _ReasoningGymOptions
    needs = "entry"

    def score(self, problems: list[Problem], completions: list[str]) -> Scored:
        how = self.options.extract
        if how == "auto":
            how = {"plain": "none", "r1": "answer_tag"}.get(self.ctx.template, "boxed")
        out = Scored([])
        for p, c in zip(problems, completions):
            answer = c
            if how == "boxed":
                answer = last_boxed(c) or c
            elif how == "answer_tag":
                answer = answer_tag(c)
            try:
                score = 0.0 if answer is None else score_reasoning_gym(answer, p)
                out.scores.append(float(score >= 1.0) if self.options.binary else score)
            except Exception:
                out.scores.append(0.0)
                out.errors += 1
                out.tracebacks.append(traceback.format_exc())
        return out


class _TimeoutOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout: float | None = Field(None, gt=0.0, description="seconds per grade; default reward.timeout")


class MathAccuracy(Reward):
    Options = _TimeoutOptions
    needs = "answer"

    def __init__(self, ctx: _Context, options: BaseModel):
        super().__init__(ctx, options)
        from rlvr.sandbox import WorkerPool

        self.pool = WorkerPool("rlvr.rewards:verify_math", workers=ctx.workers,
                               timeout=options.timeout or ctx.timeout, warmup=("1", "\\boxed{1}"))

    def score(self, problems: list[Problem], completions: list[str]) -> Scored:
        out = Scored([0.0] * len(completions))
        jobs, where = [], []
        style = ANSWER_STYLE.get(self.ctx.template, "boxed")
        for i, (p, c) in enumerate(zip(problems, completions)):
            answer = math_answer(c, style)
            if answer:  # no answer at all scores 0 without a grade
                jobs.append((p.metadata.get("answer", p.answer), answer))
                where.append(i)
        for i, (status, value) in zip(where, self.pool.map(jobs)):
            if status == "ok":
                out.scores[i] = float(value)
            elif status == "timeout":
                out.timeouts += 1
            else:
                out.errors += 1
                out.tracebacks.append(str(value))
        return out

    def close(self) -> None:
        self.pool.close()


class _FormatOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    style: Literal["auto", "boxed", "r1"] = Field("auto", description="boxed: a non-empty \\boxed{}; r1: "
                                                                      "<think></think> <answer></answer>; auto: by data.template")


class MathFormat(Reward):
    Options = _FormatOptions

    def score(self, problems: list[Problem], completions: list[str]) -> Scored:
        style = self.options.style
        if style == "auto":
            style = ANSWER_STYLE.get(self.ctx.template, "boxed")
        if style == "r1":
            return Scored([float(bool(_R1_FORMAT.match(c))) for c in completions])
        return Scored([float(bool((last_boxed(c) or "").strip())) for c in completions])


class _CodeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout: float | None = Field(None, gt=0.0, description="wall-clock seconds per program; default reward.timeout")
    memory_mb: int = Field(1024, ge=64, description="memory for the program's whole process tree, MiB (each "
                                                    "process gets memory_mb / max_processes of address space)")
    max_processes: int = Field(8, ge=1, description="processes and threads the program may have")
    builtin_results: bool = Field(
        True, description="function tests (HumanEval check, assert lists) run in a trusted judge outside the sandbox; "
                          "arguments and results cross as builtin types only (an object overriding == cannot pass). "
                          "false: the tests run inside the sandbox with the program, for arguments or results of "
                          "other types (classes, numpy); weaker: a program that tampers with the interpreter (its "
                          "frames, builtins) can forge a pass")


class CodeTests(Reward):
    Options = _CodeOptions
    needs = "tests"

    def score(self, problems: list[Problem], completions: list[str]) -> Scored:
        """1 when every test passed: stdout compared here, function tests decided by rlvr.judge."""
        from concurrent.futures import ThreadPoolExecutor

        from rlvr.judge import check_function, run_inside
        from rlvr.sandbox import isolation, run_program

        o = self.options
        limits = {"timeout": o.timeout or self.ctx.timeout, "memory_mb": o.memory_mb, "max_processes": o.max_processes}
        runs: list[Callable[[], Any]] = []
        owner: list[int] = []
        expected: list[str | None] = []
        out = Scored([0.0] * len(completions))
        for i, (p, c) in enumerate(zip(problems, completions)):
            tests = p.metadata.get("tests")
            if isinstance(tests, list) and tests and isinstance(tests[0], dict):  # stdin/stdout cases
                code = extract_code(c)[0]
                for case in tests:
                    runs.append(functools.partial(run_program, code, stdin=str(case["input"]), **limits))
                    owner.append(i)
                    expected.append(str(case["output"]))
                continue
            program, tests = _program_and_tests(p, c)
            if o.builtin_results:
                runs.append(functools.partial(check_function, program, tests, prefix=p.metadata.get("code_prefix") or "",
                                              entry_point=p.metadata.get("entry_point"), **limits))
            else:
                runs.append(functools.partial(run_inside, program, tests, **limits))
            owner.append(i)
            expected.append(None)
        isolation()  # probe once, not in every thread
        with ThreadPoolExecutor(max(1, min(self.ctx.workers, len(runs))), thread_name_prefix="rlvr-code") as pool:
            results = list(pool.map(lambda run: run(), runs))
        passed = [True] * len(completions)
        timed_out = [False] * len(completions)
        for i, want, r in zip(owner, expected, results):
            ok = r.passed and (want is None or _same_output(r.stdout, want))
            passed[i] = passed[i] and ok
            if r.status == "timeout":
                timed_out[i] = True
            elif r.status == "error":  # the sandbox failed, not the program
                out.errors += 1
                out.tracebacks.append(r.stderr)
        out.scores = [float(p) for p in passed]
        out.timeouts = sum(timed_out)
        return out


def _same_output(got: str, want: str) -> bool:
    norm = lambda s: [line.rstrip() for line in s.strip().splitlines()]
    return norm(got) == norm(want)


class CallableReward(Reward):
    """A TRL-convention function `f(prompts, completions, **columns) -> list[float | None]`."""

    def __init__(self, fn: Callable[..., list[float | None]]):
        self.fn = fn

    def score(self, problems: list[Problem], completions: list[str]) -> Scored:
        try:
            return Scored(self._call(problems, completions))
        except Exception:
            first = traceback.format_exc()
        out = Scored([], tracebacks=[first])  # isolate the failure to the samples that cause it
        for p, c in zip(problems, completions):
            try:
                out.scores.append(self._call([p], [c])[0])
            except Exception:
                out.scores.append(0.0)
                out.errors += 1
        if not out.errors:  # the batch call failed but every single call worked: still worth showing
            out.errors, out.tracebacks = 0, []
        return out

    def _call(self, problems: list[Problem], completions: list[str]) -> list[float | None]:
        columns: dict[str, list[Any]] = {"answer": [p.metadata.get("answer", p.answer) for p in problems]}
        if any(p.metadata.get("tests") is not None for p in problems):
            columns["tests"] = [p.metadata.get("tests") for p in problems]
        if any("entry" in p.metadata for p in problems):
            columns["entry"] = [p.metadata.get("entry") for p in problems]
        for name in dict.fromkeys(k for p in problems for k in p.metadata.get("columns", {})):
            columns[name] = [p.metadata.get("columns", {}).get(name) for p in problems]
        scores = list(self.fn(prompts=[p.prompt for p in problems], completions=list(completions), **columns))
        if len(scores) != len(completions):
            raise ValueError(f"returned {len(scores)} scores for {len(completions)} completions")
        return [None if s is None else float(s) for s in scores]


BUILTINS: dict[str, type[Reward]] = {
    "reasoning_gym": ReasoningGymReward,
    "math_accuracy": MathAccuracy,
    "math_format": MathFormat,
    "code_tests": CodeTests,
}


class WeightedReward:
    """The configured rewards' weighted sum; a `RewardFn`, plus `detailed` for per-reward metrics."""

    def __init__(self, components: list[tuple[str, float, Reward]]):
        self.components = components

    def __call__(self, problems: list[Problem], completions: list[str]) -> list[float]:
        return self.detailed(problems, completions)[0]

    def detailed(self, problems: list[Problem], completions: list[str]) -> tuple[list[float], dict[str, Scored]]:
        parts: dict[str, Scored] = {}
        totals = [0.0] * len(completions)
        for name, weight, reward in self.components:
            try:
                s = reward.score(problems, completions)
                if len(s.scores) != len(completions):
                    raise ValueError(f"returned {len(s.scores)} scores for {len(completions)} completions")
            except Exception:  # a bug in a built-in: the whole batch scores 0 for it, counted
                s = Scored([0.0] * len(completions), errors=len(completions), tracebacks=[traceback.format_exc()])
            parts[name] = s
            for i, v in enumerate(s.scores):
                if v is not None:
                    totals[i] += weight * v
        return totals, parts

    def close(self) -> None:
        for _, _, r in self.components:
            r.close()


def build_reward(reward_cfg: RewardConfig, data_cfg: Any) -> WeightedReward:
    """The reward of `reward_cfg` for problems of `data_cfg` (an rlvr.data.DataConfig).

    Raises ConfigError for a function that cannot be imported, or a built-in
    whose input the data does not have (code_tests without tests, ...).
    """
    functions = list(reward_cfg.functions) or [RewardFunctionConfig(name=natural_reward(data_cfg))]
    ctx = _Context(template=getattr(data_cfg, "template", "plain"), timeout=reward_cfg.timeout, workers=reward_cfg.workers)
    components: list[tuple[str, float, Reward]] = []
    used: dict[str, int] = {}
    for i, f in enumerate(functions):
        key = f"reward.functions.{i}"
        if ":" in f.name:
            reward: Reward = CallableReward(_import_callable(f.name, key))
            label = f.name.rsplit(":", 1)[1]
        else:
            cls = BUILTINS[f.name]
            _check_needs(cls, f.name, data_cfg, key)
            reward = cls(ctx, cls.Options.model_validate(dict(f.model_extra or {})))
            label = f.name
        used[label] = used.get(label, 0) + 1
        if used[label] > 1:
            label = f"{label}_{used[label]}"
        components.append((label, f.weight, reward))
    return WeightedReward(components)


def natural_reward(data_cfg: Any) -> str:
    """The data source's own reward, used when reward.functions is empty."""
    source = getattr(data_cfg, "source", "reasoning_gym")
    if source == "reasoning_gym":
        return "reasoning_gym"
    if source == "humaneval" or getattr(getattr(data_cfg, "columns", None), "tests", None):
        return "code_tests"
    return "math_accuracy"


def _check_needs(cls: type[Reward], name: str, data_cfg: Any, key: str) -> None:
    source = getattr(data_cfg, "source", "reasoning_gym")
    if cls.needs == "entry" and source != "reasoning_gym":
        raise _error(f"{key}: reward 'reasoning_gym' scores reasoning-gym problems, but data.source is {source!r}")
    if cls.needs == "tests" and source != "humaneval" and not getattr(getattr(data_cfg, "columns", None), "tests", None):
        raise _error(f"{key}: reward 'code_tests' needs tests; set data.columns.tests to the column that holds them")


def _import_callable(path: str, key: str) -> Callable[..., Any]:
    mod, _, attr = path.rpartition(":")
    try:
        obj = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as e:
        raise _error(f"{key}.name: cannot import {path!r}: {type(e).__name__}: {e}") from None
    if not callable(obj):
        raise _error(f"{key}.name: {path!r} is a {type(obj).__name__}, not a function")
    return obj


# ------------------------------------------------------------ the runner the trainer calls


class RewardRunner:
    """Scores a batch, isolating failures to the sample that caused them.

    `runner(problems, completions)` -> (rewards [B], metrics): `reward/errors`,
    `reward/timeouts`, and for a `build_reward` reward `reward/<name>`, the mean
    of each term (over the samples it scored). Each reward's first failure is
    printed with its traceback, once.
    """

    def __init__(self, fn: RewardFn = reasoning_gym_reward):
        self.fn = fn
        self.errors = 0
        self.timeouts = 0
        self._shown: set[str] = set()

    def __call__(self, problems: list[Problem], completions: list[str]) -> tuple["torch.Tensor", dict[str, float]]:
        import torch

        if isinstance(self.fn, WeightedReward):
            scores, parts = self.fn.detailed(problems, completions)
            metrics = {"reward/errors": 0.0, "reward/timeouts": 0.0}
            for name, s in parts.items():
                metrics["reward/errors"] += s.errors
                metrics["reward/timeouts"] += s.timeouts
                seen = [v for v in s.scores if v is not None]
                metrics[f"reward/{name}"] = sum(seen) / len(seen) if seen else 0.0
                if s.tracebacks:
                    self._show_once(name, s.tracebacks[0])
        else:
            scores, errors = self._plain(problems, completions)
            metrics = {"reward/errors": float(errors), "reward/timeouts": 0.0}
        if len(scores) != len(completions):
            raise ValueError(f"reward function returned {len(scores)} scores for {len(completions)} completions")
        self.errors += int(metrics["reward/errors"])
        self.timeouts += int(metrics["reward/timeouts"])
        return torch.tensor([0.0 if s is None else float(s) for s in scores]), metrics

    def _plain(self, problems: list[Problem], completions: list[str]) -> tuple[list[float | None], int]:
        try:
            return list(self.fn(problems, completions)), 0
        except Exception:
            pass
        scores, errors = [], 0
        for p, c in zip(problems, completions):
            try:
                scores.append(self.fn([p], [c])[0])
            except Exception:
                self._show_once("reward", traceback.format_exc())
                scores.append(0.0)
                errors += 1
        return scores, errors

    def _show_once(self, name: str, tb: str) -> None:
        if name not in self._shown:
            self._shown.add(name)
            print(f"rlvr: the reward {name!r} failed; scoring that sample 0 (shown once):\n{tb}")


def overlong_penalty(lengths: "torch.Tensor", max_len: int, buffer: int, factor: float = 1.0) -> "torch.Tensor":
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), added to the task reward.

    0 up to max_len - buffer tokens, then falling linearly to -factor at max_len:
    r = min(-(|y| - (max_len - buffer)) / buffer * factor, 0).
    """
    import torch

    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    over = (lengths.float() - (max_len - buffer)) / buffer * factor
    return torch.clamp(-over, max=0.0)
