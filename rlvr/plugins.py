"""Plugins: algorithms (or any code that registers something) from outside rlvr, by name on the CLI.

Two ways, both without editing rlvr:

- `--import MODULE` (repeatable) on `rlvr train`, `rlvr eval` and `rlvr sweep` (and so through
  `rlvr launch ... train --import MODULE`): the modules are imported before the config is read, so
  a `@register_algorithm("sign_grpo")` in them makes `algorithm.name: sign_grpo` valid. Modules are
  found on sys.path (PYTHONPATH) and in the current directory, as `python -m rlvr` finds them. A
  sweep passes its imports to every cell's commands (`--launcher print/accelerate`).
- Entry points of installed distributions in the group `rlvr.algorithms` (`ENTRY_POINT_GROUP`),
  e.g. in a plugin's pyproject.toml:

      [project.entry-points."rlvr.algorithms"]
      sign_grpo = "mypkg.sign_grpo:SignGRPO"   # an Algorithm class, or "mypkg.sign_grpo": a module registering it

  Loaded lazily: only when `algorithm.name` names an algorithm that is not registered yet, so a
  plugin installed but not used is never imported. An Algorithm class it loads is registered under
  the entry point's name.

A module that cannot be imported, or an entry point that does not load, is one line
(`ConfigError`) naming it; an error raised by the plugin's own code is its traceback.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from collections.abc import Iterable
from typing import Any

from rlvr.errors import ConfigError

ENTRY_POINT_GROUP = "rlvr.algorithms"


def import_modules(names: Iterable[str]) -> list[Any]:
    """Import each module named (`--import`), the current directory searched last; ConfigError for a
    module that is not found (one line), the plugin's own exception otherwise."""
    names = list(names or [])
    if names and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    mods = []
    for name in names:
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name is None or not (name == e.name or name.startswith(e.name + ".")):
                raise  # the plugin itself imports something missing: its traceback says where
            raise ConfigError(
                f"--import {name}: no module named {e.name!r} (on sys.path, PYTHONPATH or the current directory)"
            ) from None
    return mods


def entry_points(group: str = ENTRY_POINT_GROUP) -> dict[str, importlib.metadata.EntryPoint]:
    """The group's entry points by name (the first distribution's where two share a name)."""
    out: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=group):
        out.setdefault(ep.name, ep)
    return out


def load_entry_point(name: str, group: str = ENTRY_POINT_GROUP) -> Any | None:
    """What the entry point `name` of `group` points at (a class or a module), imported now; None if
    no installed distribution declares one. One line (ConfigError) when its target does not import."""
    ep = entry_points(group).get(name)
    if ep is None:
        return None
    dist = getattr(ep, "dist", None)
    where = f" (distribution {dist.name} {dist.version})" if dist is not None else ""
    try:
        return ep.load()
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"entry point {name} = {ep.value!r} in group {group}{where} does not load: {e}") from None
