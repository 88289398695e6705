"""Answer extraction: where a completion's final answer is, by the template's answer style.

`answer_style(template)` reads `rlvr.templates.ANSWER_STYLE`: `boxed` (a `\\boxed{}`)
or `TAG` (DeepSeek-R1's `<answer></answer>`). A new template with an answer style
is graded by its style's rule without a change here.
"""

from __future__ import annotations

import re

from rlvr.templates import ANSWER_STYLE

TAG = "r1"  # ANSWER_STYLE's name for an answer in <answer></answer> (the r1 template's)


def answer_style(template: str) -> str:
    """Where `template` asks for the final answer: `boxed` or `TAG`; a template not in ANSWER_STYLE: boxed."""
    return ANSWER_STYLE.get(template, "boxed")


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
    return text[span[0] : span[1]] if span else None


_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)


def answer_tag(text: str) -> str | None:
    """Content of the last <answer>...</answer>, stripped; None if there is none."""
    found = _ANSWER_TAG.findall(text)
    return found[-1].strip() if found else None


# math delimiters math-verify's LaTeX extraction looks for ($ not escaped as \$)
MATH_MARK = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed\b|\\fbox\b")
_WHOLE_MATH = re.compile(r"^\s*(?:\$\$(.*)\$\$|(?<!\\)\$(.*)(?<!\\)\$|\\\((.*)\\\)|\\\[(.*)\\\])\s*\.?\s*$", re.S)
_LEAD = re.compile(
    r"^\s*(?:so,?\s+|thus,?\s+|therefore,?\s+|hence,?\s+)?(?:the\s+)?(?:final\s+)?answer\s*(?:is\s*:?|:|=)\s*", re.I
)
# ASCII function names LaTeX would read as products of letters (pi -> p*i); sqrt(..) it reads already
_ASCII_FN = re.compile(r"(?<![\\A-Za-z])(pi|ln|log|exp|sin|cos|tan|cot|sec|csc)(?![A-Za-z])")


def bare_to_latex(answer: str) -> str:
    """A bare final answer as the LaTeX math-verify should read: no lead-in, no closing period, ASCII names as commands."""
    s = _LEAD.sub("", answer.strip()).strip()
    while s.endswith(".") and not s.endswith(".."):  # "376, 625." reads as 625 alone
        s = s[:-1].rstrip()
    if "\\" not in s:
        s = _ASCII_FN.sub(r"\\\1", s).replace("**", "^")
    return s.replace("\\varnothing", "\\emptyset")


def math_answer(completion: str, style: str = "boxed") -> str | None:
    """The text of `completion` that math-verify grades, by the template's answer style (`answer_style`).

    * `boxed`: the whole completion (math-verify prefers the last \\boxed{}, and finds an
      unboxed final answer too), its last box's content tidied as a bare answer is.
    * `TAG`: the last <answer> tag's content, None if there is none or it is empty. A bare
      answer (`2^{n-1}`, `376, 625`, `[0, 1)`, `yes`, `x = 3`, or one wholly in `$...$`)
      is put in \\boxed{}, so it is read as LaTeX exactly as a boxed answer is; an answer
      with its own math delimiters inside prose (`the answer is $5$`) is left to math-verify.
    """
    if style != TAG:
        span = _last_boxed_span(completion)
        if span is None:
            return completion
        return completion[: span[0]] + bare_to_latex(completion[span[0] : span[1]]) + completion[span[1] :]
    content = answer_tag(completion)
    if not content:
        return None
    whole = _WHOLE_MATH.match(content)
    if whole:
        inner = next(g for g in whole.groups() if g is not None)
        if not MATH_MARK.search(inner):
            content = inner
    if MATH_MARK.search(content):
        return math_answer(content, "boxed")  # a \\boxed{} in the tag is tidied as in a boxed completion
    return "\\boxed{" + bare_to_latex(content) + "}"


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
