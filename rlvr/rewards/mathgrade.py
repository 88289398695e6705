"""Math grading with Hugging Face math-verify: `verify_math` (run in grading workers), `gold_problem`,
and `Grades`, which grades each distinct extracted answer of a problem once.

math_accuracy's grading workers (`rlvr.workers.WorkerPool`) import this module, so it
imports neither torch nor math-verify at import time: a worker starts fast and pays
for math-verify once, in its warm-up call.

Grading once per distinct answer (`answer_key`, `Grades`): math-verify's `parse(text)`
tries the regex matches of its extraction patterns in a fixed order (highest priority
first, then rightmost) and returns the first that converts, with the first match's
string; the result is a function of the matches tried alone. So when the first match
converts, two texts whose first match has the same groups (the latex or number string
math-verify hands to its converter: for `... so the answer is $\\boxed{5}$.` the
group `\\boxed{5}`) parse to the same thing and get the same grade. `answer_key` is that
first match, found with math-verify's own patterns (`_first_match`); the worker says
whether it converted (`grade_answer`, which parses in one pass with math-verify's extraction
loop, `_parse`); when it did not, each text is graded on its own. `_first_match` and `_parse`
follow math-verify 0.9's `extract_target_from_pred`; tests/test_math_grading.py holds both to
math-verify's own parse().
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading

from rlvr.rewards.extract import MATH_MARK, bare_to_latex, last_boxed


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout: int | None = None) -> list:
    """math-verify's reading of a gold answer: a bare one (no $, \\boxed) is read as a bare tag answer is."""
    from math_verify import parse

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" on every call
    text = gold if MATH_MARK.search(gold) else "\\boxed{" + bare_to_latex(gold) + "}"
    parsed = parse(text, parsing_timeout=timeout)
    return parsed or parse(gold, parsing_timeout=timeout)


_PLAIN_NUMBER = re.compile(r"\s*-?\d+(?:\.\d+)?\s*")
# what is not a variable in a gold's text: text blocks, environment and font names, commands, "and"/"or"
_NOT_VARIABLES = re.compile(
    r"\\(?:begin|end|mathbb|mathcal|mathfrak|mathscr)\s*\{[^{}]*\}|\\[A-Za-z]+|\\.|\b(?:and|or)\b"
)
_TEXT_MACRO = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|textsf|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}"
)
_WORDS = re.compile(r"[a-z]+(?:[ '-]+[a-z]+)*")


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
    try:
        text = str(reading)
    except Exception:  # sympy cannot print some readings (floor((3/2)**2015): PrecisionExhausted); for messages only
        text = gold
    shown = text if len(text) <= 40 else text[:37] + "..."
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
            if abs(probe) not in numbers and verify(
                g, parse(f"\\boxed{{{probe}}}", parsing_timeout=timeout), timeout_seconds=timeout
            ):
                return f"reads as {probe}, a number it does not write"
    return None


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
    return grade_answer(gold, answer)[0]


def grade_answer(gold: str, answer: str) -> list:
    """[verify_math's grade, shared]: shared when the grade is a function of `answer_key(gold, answer)`
    alone (the words rule decided it, or math-verify's first match converted), so that it holds for
    every answer with that key. What math_accuracy's workers call.
    """
    from math_verify import verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" on every call
    g = _parse_gold(gold)
    if not g:
        raise ValueError(f"math-verify cannot parse the gold answer {gold!r}")
    want = _words(gold)
    boxed = last_boxed(answer)
    if want is not None and boxed is not None:
        said = _words(boxed, any_letters=True)  # against a text gold, "on" is a word too
        if said is not None:
            return [float(said == want), True]
    parsed, shared = _parse(answer)
    return [float(verify(g, parsed, timeout_seconds=None)), shared]


_GROUPS = None  # math-verify's patterns as parse() tries them: [[(pattern, its index, its target), ...] by priority]


def _pattern_groups() -> list:
    global _GROUPS
    if _GROUPS is None:
        from itertools import groupby

        from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig, get_extraction_regexes

        # parse()'s default targets (verify_math passes none), flattened and grouped as extract_target_from_pred does
        regexes = get_extraction_regexes([LatexExtractionConfig(), ExprExtractionConfig()])
        flat = [(pat, target, prio) for patterns, target in regexes for pat, prio in patterns]
        flat = sorted(((pat, i, t, prio) for i, (pat, t, prio) in enumerate(flat)), key=lambda x: x[3])  # stable
        _GROUPS = [[(pat, i, t) for pat, i, t, _ in grp] for _, grp in groupby(flat, key=lambda x: x[3])]
    return _GROUPS


def _first_match(text: str) -> tuple | None:
    """The match math-verify's parse(text) tries first, as (its pattern's index, its groups that matched).

    parse() takes the highest-priority group of patterns with any match, and in it the match
    ending last (of those, the one starting first; of those, the first found): `max` keeps the
    first of equal keys, as their stable reverse sort does. Its conversion reads only the match's
    groups and the pattern's target (`extract_latex`, `extract_expr`), so equal keys convert
    equally. None when nothing matches.
    """
    for group in _pattern_groups():
        found = [(m.end(), -m.start(), i, m) for pat, i, _ in group for m in pat.finditer(text)]
        if found:
            _, _, i, m = max(found, key=lambda x: (x[0], x[1]))
            return i, {name: value for name, value in m.groupdict().items() if value is not None}
    return None


def _parse(text: str) -> tuple[list, bool]:
    """(math-verify's `parse(text, parsing_timeout=None)`, whether the first match it tried converted), in
    one pass: their `extract_target_from_pred` with parse's defaults (any match, the first match's string
    as a fallback), noting how many matches it tried. tests/test_math_grading.py holds it to parse()."""
    from math_verify.parser import extract_match

    extracted: list = []
    fallbacks: list[str] = []
    tried = 0
    try:
        for group in _pattern_groups():
            found = [(m, m.start(), m.end(), t) for pat, _, t in group for m in pat.finditer(text)]
            for m, _, _, target in sorted(found, key=lambda x: (x[2], -x[1]), reverse=True):
                value, string = extract_match(m, target)
                tried += 1
                if string:
                    fallbacks.append(string)
                if value is not None:
                    extracted.append(value)
                    break
            if extracted:
                break
    except Exception:  # as parse(): no reading at all
        return [], False
    return extracted + fallbacks[:1], bool(extracted) and tried == 1


def answer_key(gold: str, answer: str) -> str | None:
    """What decides `answer`'s grade against `gold` when `grade_answer` says it is shared, as a string;
    None when the answer is its own key (the whole text).

    For an answer with a \\boxed{ (every one under the r1 template, most under qwen-boxed): the
    first match math-verify's parse tries (`_first_match`: the group `\\boxed{5}` of `$\\boxed{5}$.`),
    with the last box's content when the gold is a text answer (the words rule reads that). An
    answer without a box (a truncated completion) is graded as the whole text it is.
    """
    if "\\boxed{" not in answer:
        return None
    first = _first_match(answer)
    if first is None:
        return None
    return json.dumps([first[0], first[1], last_boxed(answer) if _words(gold) is not None else None])


def work(op: str, *args):
    """The grading workers' entry: ("grade", gold, answer) -> `grade_answer`; ("keys", [[gold, answer], ...])
    -> their `answer_key`s (math-verify's regexes run here too, bounded by the worker's time limit)."""
    if op == "grade":
        return grade_answer(*args)
    if op == "keys":
        return [answer_key(g, a) for g, a in args[0]]
    raise ValueError(f"unknown grading op {op!r}")


class Grades:
    """(gold, answer) pairs graded through `pool` (a WorkerPool calling `work`), each distinct
    `answer_key` of a gold once, the shared grades kept for later calls (the last `cache_size` keys).

    `grade(jobs)` returns one (status, value) per job as `WorkerPool.map` does, value the grade. The
    keys are found in the workers, in chunks (a chunk that fails or times out keys its answers by
    their whole text). A key whose grade is not shared (math-verify's first match did not convert,
    so parse reads further into the text) is graded again for each distinct text of the key. A
    timeout or error of a key's grade is every one of its samples'. `graded` counts the grades run,
    `asked` the jobs.
    """

    CHUNK = 64  # answers a key call carries

    def __init__(self, pool, cache_size: int = 1 << 16):
        from collections import OrderedDict

        self.pool, self.cache_size = pool, cache_size
        self.cache: OrderedDict = OrderedDict()
        self.graded = self.asked = 0

    def keys(self, jobs: list[tuple[str, str]]) -> list[tuple]:
        """One hashable key per job: (gold, "m", answer_key) or, with no key, (gold, "t", answer)."""
        chunks = [jobs[s : s + self.CHUNK] for s in range(0, len(jobs), self.CHUNK)]
        found: list = []
        for chunk, (status, value) in zip(chunks, self.pool.map([("keys", c) for c in chunks]), strict=True):
            found += value if status == "ok" and len(value) == len(chunk) else [None] * len(chunk)
        return [(g, "t", a) if k is None else (g, "m", k) for (g, a), k in zip(jobs, found, strict=True)]

    def grade(self, jobs: list[tuple[str, str]]) -> list[tuple[str, object]]:
        out: list = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for i, key in enumerate(self.keys(jobs)):
            if key in self.cache:
                self.cache.move_to_end(key)
                out[i] = ("ok", self.cache[key])
            else:
                groups.setdefault(key, []).append(i)
        keys = list(groups)
        again: dict[tuple[str, str], list[int]] = {}
        for key, (status, value) in zip(keys, self._map([jobs[groups[k][0]] for k in keys]), strict=True):
            first, *rest = groups[key]
            if status != "ok":
                for i in groups[key]:
                    out[i] = (status, value)
                continue
            grade, shared = value
            out[first] = ("ok", grade)
            if shared or key[1] == "t":  # a text key is the whole answer: one text
                for i in rest:
                    out[i] = ("ok", grade)
                if key[1] == "m":
                    self._keep(key, grade)
                continue
            for i in rest:  # the first match did not convert: each distinct text on its own
                if jobs[i] == jobs[first]:
                    out[i] = ("ok", grade)
                else:
                    again.setdefault(jobs[i], []).append(i)
        for job, (status, value) in zip(again, self._map(list(again)), strict=True):
            for i in again[job]:
                out[i] = ("ok", value[0]) if status == "ok" else (status, value)
        self.asked += len(jobs)
        return out

    def _map(self, jobs: list[tuple[str, str]]) -> list[tuple[str, object]]:
        self.graded += len(jobs)
        return self.pool.map([("grade", g, a) for g, a in jobs]) if jobs else []

    def _keep(self, key: tuple, grade: float) -> None:
        self.cache[key] = grade
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
