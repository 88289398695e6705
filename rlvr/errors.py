"""Leaf module for the config error and its message: shared by the config, data, reward,
template and algorithm modules.

It imports nothing from rlvr, so any module may raise `ConfigError` (and word a pydantic
error with `format_validation_error`) without a late import.
"""

from __future__ import annotations

import difflib
from typing import get_args

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A bad config: the message names the key or file and what was expected."""


class RunError(RuntimeError):
    """A run that cannot go on for a reason outside the config (disk full, run directory in use,
    non-finite weights): the message is one line naming the file or parameter; the CLI prints it
    without a traceback."""


class RewardError(RunError):
    """A reward function that is broken rather than unlucky (it failed on every sample of a batch,
    or on any sample of its first call): one line naming the function and its first error."""


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Known field names of the section at `loc` (for suggestions)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        ann = next((a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)), ann)  # X | None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def format_validation_error(err: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """One line per error of `err` (validating `model`), each naming its dotted key after `prefix`;
    an unknown key gets the closest known one and the keys allowed there."""
    lines = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"])
        key = prefix + ".".join(str(x) for x in loc)
        if e["type"] == "rlvr_config":  # already names its key (the algorithm section)
            lines.append(e["ctx"]["detail"])
        elif e["type"] == "extra_forbidden":
            known = _fields_at(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"; did you mean '{(prefix + '.'.join(map(str, loc[:-1] + (close[0],))))}'?" if close else ""
            lines.append(f"unknown key '{key}'{hint} (allowed here: {', '.join(known)})")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{key or '<top level>'}: {e['msg']}{got_s}")
    return "\n".join(lines)
