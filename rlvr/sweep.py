"""`rlvr sweep SWEEP.yaml`: ablations as a grid of runs, each followed by its eval.

A sweep file names a base recipe and axes:

    base: ../tiny/grpo.yaml                # relative to the sweep file
    output_dir: runs/sweeps/six_algorithms_tiny
    axes:
      algorithm: [grpo, ppo, rloo, dapo]   # each cell starts from that algorithm's own recipe (below)
      seed: [0, 1]                         # train.seed
      train.lr: [1.0e-4, 3.0e-4]           # any dotted key
    recipes: {dapo: ../tiny/dapo.yaml}     # optional: an algorithm's recipe, relative to the sweep file
    algorithms:                            # optional per-algorithm options, on top of its recipe
      ppo: {critic_lr: 1.0e-3}
    overrides: [train.steps=20]            # applied to every cell
    eval: {n: 16, problems: 200}           # the eval after each run: eval settings over the recipe's
    report:                                # optional: rlvr report's pass_at_k_panels.png, one panel per family
      panels: {paper: [grpo, ppo], losses: [gspo]}   # values of the algorithm (or recipe) axis
      versus: grpo                         # a column: each setting's pass@K minus GRPO's, paired, with its CI

An axis `recipe` instead of `algorithm` names recipe files: a cell of `recipe: gspo` starts from
`recipes[gspo]`, else gspo.yaml beside the base, whatever algorithm and options that recipe sets
(GSPO is GRPO with `algorithm.policy_loss: gspo`; passk_max.yaml is passk with estimator max), so
variants of one algorithm sit on one axis. `algorithms:` does not apply to it; the two axes exclude
each other.

The recipe a cell of algorithm X starts from: `recipes[X]` if given, else `X.yaml`
beside the base recipe if there is one (recipes/tiny/dapo.yaml for a base of
recipes/tiny/grpo.yaml), else the base recipe with its `algorithm:` section
replaced by {name: X} (options of one algorithm are not valid for another). So a
cell is its algorithm's recipe, everything included (DAPO's overlong shaping and
PPO's critic_lr under `algorithm:`), and differs from it only by
`algorithms[X]`, the other axes, `overrides`, and output_dir. A recipe chosen for X
must train X. Every cell's config is resolved and validated before the first runs.

The training run's own full eval is off in every cell (`eval.full=false`; a sweep file
asking for it is refused): the sweep's eval after training is each model's one full eval.

Each cell gets a directory named by its settings. A cell whose eval is written
is skipped on a rerun; a cell whose training stopped resumes from its latest
checkpoint (or restarts), and a trained cell without an eval is only evaluated.
`--launcher print` prints the `accelerate launch` commands instead of running
them, `--launcher accelerate` runs each cell as such a command. `--jobs N` runs N
cells at a time, each shard of the grid (cells i, i+N, ...) in its own `rlvr sweep
--shard i/N` process with its output in the sweep directory's shard-i.log: the tiny
recipes train on one thread (train.cpu_threads: 1), so a 2-core machine runs two.
"""

from __future__ import annotations

import gc
import itertools
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlvr.config import ConfigError, config_from_dict, format_validation_error, load_config, read_recipe
from rlvr.eval.settings import EvalOverrides, to_arguments

DONE = "cell_done.json"


class SweepReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    panels: dict[str, list[str]] = Field(
        default_factory=dict,
        description="family -> values of the algorithm/recipe axis: one pass@k panel each, the base in every panel",
    )
    versus: str | None = Field(
        None,
        description="a value of the algorithm/recipe axis: each other setting's pass@K minus its, paired over "
        "problems, with its interval (a column of the report)",
    )


METHOD_AXES = ("algorithm", "recipe")


def method_axis(axes: dict[str, Any]) -> str | None:
    """The axis naming what is trained (algorithm or recipe), if the sweep has one."""
    return next((a for a in METHOD_AXES if a in axes), None)


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: str = Field(description="base recipe, relative to the sweep file")
    output_dir: str = Field(description="sweep directory: one sub-directory per cell")
    axes: dict[str, list[Any]] = Field(description="algorithm / seed / dotted key -> values; the grid is their product")
    recipes: dict[str, str] = Field(
        default_factory=dict,
        description="algorithm -> its recipe, relative to the sweep file (default: <algorithm>.yaml beside the base, if there)",
    )
    algorithms: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-algorithm options, on top of its recipe"
    )
    overrides: list[str] = Field(default_factory=list, description="dotted overrides applied to every cell")
    eval: EvalOverrides = Field(
        default_factory=EvalOverrides,
        description="the eval after each run: any eval setting (rlvr.eval.EvalSettings), unset = the cell recipe's eval: section",
    )
    accelerate_config: str | None = Field(None, description="accelerate config for --launcher print/accelerate")
    report: SweepReport = Field(default_factory=lambda: SweepReport(), description="how rlvr report draws the sweep")


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[SweepConfig, Path]:
    """The sweep file, validated with every cell resolved; `overrides` (the command line's dotted
    `key=value`s) apply to every cell after the file's own `overrides`. An axis key or output_dir is
    refused there: the grid and its directory are the sweep file's."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sweep file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {' '.join(str(e).split())}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a sweep file is a mapping (base, output_dir, axes, ...), got {type(raw).__name__}")
    try:
        sweep = SweepConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{p}: " + format_validation_error(e, SweepConfig)) from None
    base = (p.parent / sweep.base).resolve() if not Path(sweep.base).is_absolute() else Path(sweep.base)
    if not base.is_file():
        raise ConfigError(f"{p}: base recipe not found: {base}")
    for key, values in sweep.axes.items():
        if not values:
            raise ConfigError(f"{p}: axes.{key} has no values")
    if all(a in sweep.axes for a in METHOD_AXES):
        raise ConfigError(f"{p}: axes.algorithm and axes.recipe both name what is trained: keep one")
    method = method_axis(sweep.axes)
    versus = sweep.report.versus
    if versus is not None and versus not in (sweep.axes.get(method) or []):
        raise ConfigError(
            f"{p}: report.versus: {versus!r} is not a value of axes.{method or 'algorithm'} "
            f"({sweep.axes.get(method) or 'no such axis'})"
        )
    for family, members in sweep.report.panels.items():
        unknown = [m for m in members if m not in (sweep.axes.get(method) or [])]
        if unknown:
            raise ConfigError(
                f"{p}: report.panels.{family}: {unknown[0]!r} is not a value of axes.{method or 'algorithm'} "
                f"({sweep.axes.get(method) or 'no such axis'})"
            )
    recipes = {}
    for name, rel in sweep.recipes.items():
        path = (p.parent / rel).resolve() if not Path(rel).is_absolute() else Path(rel)
        if not path.is_file():
            raise ConfigError(f"{p}: recipes.{name}: recipe not found: {path}")
        recipes[name] = str(path)
    for o in overrides:
        key = o.partition("=")[0].strip().removesuffix(":")  # key:=value replaces a mapping whole
        if "=" not in o or not key:
            raise ConfigError(f"sweep override {o!r}: expected dotted.key=value (e.g. train.steps=2)")
        axis = "seed" if key == "train.seed" and "seed" in sweep.axes else key if key in sweep.axes else None
        if axis or key == "output_dir":
            where = f"axes.{axis}" if axis else "output_dir"
            raise ConfigError(f"sweep override {o!r}: {key} is the sweep's own ({where} in {p}); change it there")
    sweep = sweep.model_copy(update={"recipes": recipes, "overrides": [*sweep.overrides, *overrides]})
    full = [o for o in sweep.overrides if o.partition("=")[0].strip().removesuffix(":") == "eval.full"] + (
        ["axes.eval.full"] if "eval.full" in sweep.axes else []
    )
    if any(o == "axes.eval.full" or yaml.safe_load(o.partition("=")[2]) is not False for o in full):
        raise ConfigError(
            f"{p}: {full[0]}: the sweep evaluates every cell after training itself (its eval: section), so the "
            "training run's full eval is off in every cell (eval.full=false); set the sweep's eval: instead"
        )
    for settings in cells(sweep):  # fail before the first cell, not at the fifth
        try:
            raw, source = cell_recipe(sweep, base, settings)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None
        config_from_dict(
            raw,
            cell_overrides(sweep, settings, Path(sweep.output_dir) / cell_name(settings)),
            where=f"{p}: cell {cell_name(settings)} ({source.name}): ",
        )
    return sweep, base


def cells(sweep: SweepConfig) -> list[dict[str, Any]]:
    keys = list(sweep.axes)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(sweep.axes[k] for k in keys))]


def cell_name(settings: dict[str, Any]) -> str:
    parts = []
    for k, v in settings.items():
        short = k.split(".")[-1] if k not in METHOD_AXES else ""
        parts.append(f"{short}{v}" if short else str(v))
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", "-".join(parts))


def recipe_source(sweep: SweepConfig, base: Path, settings: dict[str, Any]) -> Path:
    """The recipe file a cell starts from (see the module docstring)."""
    name = settings.get("algorithm", settings.get("recipe"))
    if name is None:
        return base
    if name in sweep.recipes:  # absolute after load_sweep
        return Path(sweep.recipes[name])
    own = base.parent / f"{name}.yaml"
    if "recipe" in settings and not own.is_file():
        raise ConfigError(f"axes.recipe: {name!r}: no recipes.{name} and no {own}")
    return own if own.is_file() else base


def cell_recipe(sweep: SweepConfig, base: Path, settings: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """This cell's recipe before overrides, and the file it comes from: the algorithm's own recipe
    with `algorithms[X]` on top, or the base with its algorithm section replaced whole."""
    source = recipe_source(sweep, base, settings)
    raw = read_recipe(source)  # its `base:` chain resolved
    if "recipe" in settings:  # the recipe as it is: its algorithm and options
        return raw, source
    name = settings.get("algorithm")
    if name is not None:
        section = raw.get("algorithm") if isinstance(raw.get("algorithm"), dict) else {}
        if section.get("name") != name:
            if source != base or name in sweep.recipes:
                raise ConfigError(
                    f"{source} trains {section.get('name')!r}, not {name!r}: name {name}'s own recipe under recipes:"
                )
            section = {"name": name}
        raw["algorithm"] = {**section, **sweep.algorithms.get(name, {})}
    return raw, source


def write_cell_recipe(sweep: SweepConfig, base: Path, settings: dict[str, Any], out: Path) -> Path:
    """This cell's recipe (`cell_recipe`), saved in the cell directory with its source named."""
    raw, source = cell_recipe(sweep, base, settings)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "recipe.yaml"
    path.write_text(f"# from {source}\n" + yaml.safe_dump(raw, sort_keys=False))
    return path


def cell_overrides(sweep: SweepConfig, settings: dict[str, Any], out: Path) -> list[str]:
    """Dotted overrides that turn the cell recipe into this cell. The trainer's full eval is off
    (`eval.full=false`): the sweep evaluates every cell itself after training (its `eval:` settings),
    into the same `eval/` directory, so each model is evaluated once; a recipe's `eval.full: true`
    (the paper recipes') would sample every model twice at n = 256."""
    ov = [*sweep.overrides, "eval.full=false"]
    for k, v in settings.items():
        if k in METHOD_AXES:
            continue
        if k == "seed":
            ov.append(f"train.seed={v}")
        else:
            ov.append(f"{k}={json.dumps(v) if not isinstance(v, str) else v}")
    ov.append(f"output_dir={out}")
    return ov


def cell_state(out: Path) -> str:
    if (out / DONE).is_file():
        return "done"
    if (out / "final" / "config.json").is_file() and (out / "train_done.json").is_file():
        return "trained"
    if (out / "checkpoints").is_dir() or (out / "metrics.jsonl").is_file():
        return "partial"
    return "new"


def run_sweep(
    path: str | Path,
    *,
    launcher: str = "inprocess",
    only: int | None = None,
    overrides: list[str] | None = None,
    imports: list[str] | None = None,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
) -> list[Path]:
    """Run (or print) every cell. `imports`: the modules `rlvr sweep --import` imported in this process
    (rlvr/plugins.py), passed on to every cell's train and eval command. `jobs` > 1: that many
    `--shard i/jobs` processes (`run_shards`); `shard` (i, N): only cells i, i + N, ... of the grid."""
    if jobs > 1 and launcher != "inprocess":  # not silently one at a time
        raise ConfigError(f"--jobs {jobs} runs in-process shards; --launcher {launcher} runs its cells one at a time")
    sweep, base = load_sweep(path, overrides or [])
    root = Path(sweep.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    grid = cells(sweep)
    if shard is None:
        (root / "sweep.json").write_text(
            json.dumps(
                {
                    "sweep": str(path),
                    "base": str(base),
                    "cells": grid,
                    "method_axis": method_axis(sweep.axes),
                    "panels": sweep.report.panels,
                    "versus": sweep.report.versus,
                },
                indent=1,
            )
        )
    chosen = list(enumerate(grid[:only] if only else grid))
    if jobs > 1 and launcher == "inprocess":
        return run_shards(path, root, [cell_name(s) for _, s in chosen], jobs, only, overrides or [], imports or [])
    if shard is not None:
        chosen = chosen[shard[0] :: shard[1]]
    dirs = []
    for i, settings in chosen:
        out = root / cell_name(settings)
        dirs.append(out)
        overrides = cell_overrides(sweep, settings, out)
        state = cell_state(out)
        print(f"[{i + 1}/{len(grid)}] {out.name}: {state}", flush=True)
        if state == "done":
            continue
        recipe = write_cell_recipe(sweep, base, settings, out)
        if launcher == "print":
            print("\n".join(launch_commands(sweep, recipe, overrides, out, imports)))
            continue
        (out / "cell.json").write_text(
            json.dumps(
                {"settings": settings, "overrides": overrides, "recipe": str(recipe_source(sweep, base, settings))},
                indent=1,
            )
        )
        t0, ended = time.time(), "stopped"
        try:
            if launcher == "accelerate":
                for cmd in launch_commands(sweep, recipe, overrides, out, imports)[1 if state == "trained" else 0 :]:
                    subprocess.run(shlex.split(cmd), check=True)
            else:
                run_cell_inprocess(sweep, recipe, overrides, out, train=state != "trained")
            ended = "done"
        finally:  # a stopped session's time counts too: the cell's wall time is the sum of its sessions
            log_session(out, state, time.time() - t0, ended)
        (out / DONE).write_text(json.dumps({"settings": settings, "last_session_s": time.time() - t0}))
    return dirs


def run_shards(
    path: str | Path,
    root: Path,
    names: list[str],
    jobs: int,
    only: int | None,
    overrides: list[str],
    imports: list[str],
) -> list[Path]:
    """Run the grid as `jobs` child processes, `rlvr sweep PATH --shard i/jobs`, each logging to
    root/shard-i.log; a progress bar counts finished cells. A child that fails is named with its log
    (the others finish their cells); Ctrl-C reaches the children too (one process group), each
    stopping its cell as a one-process sweep does (a checkpoint to resume from)."""
    from tqdm import tqdm

    from rlvr.errors import RunError

    base_cmd = [sys.executable, "-m", "rlvr", "sweep", str(path), *[f"--import={m}" for m in imports]]
    base_cmd += [f"--only={only}"] if only else []
    procs = []
    for i in range(jobs):
        log = open(root / f"shard-{i}.log", "a")  # noqa: SIM115 - closed below, after the child ends
        cmd = [*base_cmd, f"--shard={i}/{jobs}", *overrides]
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    print(f"{len(names)} cells in {jobs} processes; their output: {root}/shard-*.log", flush=True)
    done = lambda: sum((root / n / DONE).is_file() for n in names)  # noqa: E731
    try:
        with tqdm(total=len(names), initial=done(), desc="sweep cells", unit="cell") as bar:
            while any(p.poll() is None for p, _ in procs):
                time.sleep(2.0)
                bar.update(done() - bar.n)
            bar.update(done() - bar.n)
    finally:
        for p, log in procs:
            try:
                p.wait()
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for the children's checkpoints
                p.kill()
            log.close()
    failed = [i for i, (p, _) in enumerate(procs) if p.returncode]
    if failed:
        raise RunError(
            f"sweep shard(s) {failed} of {jobs} failed: see "
            + ", ".join(str(root / f"shard-{i}.log") for i in failed)
            + "; rerun the same command to resume"
        )
    return [root / n for n in names]


def log_session(out: Path, state: str, seconds: float, ended: str) -> None:
    """Append one line to the cell's sessions.jsonl (`rlvr report` sums them into its wall time)."""
    with open(out / "sessions.jsonl", "a") as f:
        f.write(json.dumps({"state": state, "seconds": round(seconds, 3), "ended": ended}) + "\n")


def eval_overrides(sweep: SweepConfig) -> dict[str, Any]:
    """The sweep's eval settings, over each cell recipe's eval: section."""
    return sweep.eval.model_dump(exclude_none=True)


def eval_args(sweep: SweepConfig) -> list[str]:
    """The same settings as `rlvr eval` flags (--launcher print/accelerate)."""
    return to_arguments(eval_overrides(sweep))


def launch_commands(
    sweep: SweepConfig, recipe: Path, overrides: list[str], out: Path, imports: list[str] | None = None
) -> list[str]:
    acc = f"--config_file {sweep.accelerate_config} " if sweep.accelerate_config else ""
    imp = "".join(f"--import {shlex.quote(m)} " for m in imports or [])  # the sweep's plugins, in every cell
    train = f"accelerate launch {acc}-m rlvr train {imp}{recipe} " + " ".join(shlex.quote(o) for o in overrides)
    ev = f"{sys.executable} -m rlvr eval {imp}--model {out / 'final'} --label {out.name} " + " ".join(eval_args(sweep))
    return [train, ev]


def run_cell_inprocess(sweep: SweepConfig, recipe: Path, overrides: list[str], out: Path, train: bool = True) -> None:
    """Train the cell (unless it is trained), then evaluate final/ against the base with
    rlvr.eval's evaluate, as `rlvr eval --model out/final` does. Ctrl-C is a KeyboardInterrupt."""
    from rlvr.eval import runner

    if train:
        from rlvr.trainer import Trainer

        trainer = Trainer(load_config(recipe, overrides))
        trainer.fit()
        del trainer
        gc.collect()
    cfg = load_config(out / "config.yaml")  # the run's resolved config, as `rlvr eval --model` reads it
    runner.evaluate_run(
        cfg,
        model=str(out / "final"),
        base=cfg.model.path,
        overrides=eval_overrides(sweep),
        out_dir=out / "eval",
        label=out.name,
    )
