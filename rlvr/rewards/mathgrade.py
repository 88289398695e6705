"""Math grading with Hugging Face math-verify: `verify_math` (run in grading workers) and `gold_problem`.

math_accuracy's grading workers (`rlvr.workers.WorkerPool`) import this module, so it
imports neither torch nor math-verify at import time: a worker starts fast and pays
for math-verify once, in its warm-up call.
"""

from __future__ import annotations

import functools
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
