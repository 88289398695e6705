"""Typed run configuration: YAML + dotted command-line overrides, validated at load.

Every field has a one-line description, which is also what `rlvr train --help-config`
prints. Errors name the key (`train.lr`), say what was expected, and suggest the
closest known key for a typo. The algorithm's own hyperparameters live under
`algorithm:` and are validated by that algorithm's config class, so a new
algorithm adds options without touching this file.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rlvr.data import DataConfig  # the data: and reward: sections live with their code
from rlvr.rewards import RewardConfig

TINY_MODEL = "tiny"  # model.path value that selects the embedded base model


class ConfigError(ValueError):
    """A bad config: the message names the key or file and what was expected."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    path: str = Field(TINY_MODEL, description="local checkpoint dir, hub id, or 'tiny' for the embedded base model")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights dtype for policy and reference")
    gradient_checkpointing: bool = Field(False, description="trade compute for memory in the policy's update pass")


class RolloutConfig(_Section):
    engine: Literal["hf", "vllm"] = Field("hf", description="rollout backend: transformers generate, or vLLM (GPU, optional extra)")
    n: int = Field(8, ge=1, description="samples per prompt (group size G)")
    temperature: float = Field(1.0, ge=0.0, description="sampling temperature; 0 means greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    top_k: int = Field(0, ge=0, description="top-k sampling; 0 disables")
    max_new_tokens: int = Field(16, ge=1, description="maximum response length in tokens")
    generation_batch_size: int = Field(256, ge=1, description="sequences generated per generate() call on one process")


class TrainConfig(_Section):
    steps: int = Field(40, ge=1, description="RL steps (rollout + update rounds)")
    prompts_per_step: int = Field(32, ge=1, description="prompts per step over all processes")
    epochs: int = Field(1, ge=1, description="passes over each rollout batch (PPO epochs)")
    minibatches: int = Field(1, ge=1, description="optimizer steps per epoch; the rollout batch is split into this many")
    micro_batch_size: int = Field(64, ge=1, description="sequences per forward/backward on one process (gradient accumulation fills the minibatch)")
    lr: float = Field(1e-5, gt=0.0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up, in optimizer steps")
    grad_clip: float | None = Field(1.0, description="max global gradient norm; null disables")
    seed: int = Field(0, description="seed for sampling, shuffling and init")
    cpu_threads: int = Field(1, ge=1, description="torch threads per process on CPU; 1 by default: on a 2-core machine 2 threads took ~20x longer per step whenever the other core was busy (another process, a second rank), and ~20% less when it was idle (bench/cpu_threads.py)")


class EvalConfig(_Section):
    every: int = Field(0, ge=0, description="held-out eval every N steps; 0 = only before and after training")
    before: bool = Field(True, description="evaluate the base model before the first step")
    after: bool = Field(True, description="evaluate the final model")
    n: int = Field(4, ge=1, description="samples per held-out problem")
    ks: list[int] = Field(default_factory=lambda: [1], description="k values for pass@k (each <= n)")
    temperature: float = Field(1.0, ge=0.0, description="eval sampling temperature")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="eval nucleus sampling mass")
    threshold: float = Field(1.0, description="a sample counts as correct when its reward >= threshold")
    K: int = Field(256, ge=1, description="K of the sampling-efficiency gap pass@K(base) - pass@1(model); clipped to n")
    final_n: int | None = Field(None, ge=1, description="samples per problem in the full eval of the final model (rlvr eval); null = n")
    full: bool = Field(False, description="after training, write the full eval of final/ vs the base (samples, metrics.json, plots, summary.md) to output_dir/eval")

    @model_validator(mode="after")
    def _ks_fit(self) -> "EvalConfig":
        bad = [k for k in self.ks if k < 1 or k > self.n]
        if bad:
            raise ValueError(f"ks {bad} must lie in [1, n={self.n}]")
        return self


class CheckpointConfig(_Section):
    every: int = Field(0, ge=0, description="save a resumable checkpoint every N steps; 0 = never")
    keep: int = Field(2, ge=1, description="how many recent checkpoints to keep")
    resume: bool = Field(True, description="resume from the latest checkpoint in output_dir if there is one")


class TrackingConfig(_Section):
    report_to: list[Literal["wandb", "tensorboard"]] = Field(default_factory=list, description="accelerate trackers to log to")
    project: str = Field("rlvr", description="tracker project name")
    progress: bool = Field(True, description="console progress bar")


class RunConfig(_Section):
    output_dir: str = Field("runs/run", description="run directory: config, metrics.jsonl, checkpoints, final/")
    model: ModelConfig = Field(default_factory=ModelConfig, description="policy model")
    data: DataConfig = Field(default_factory=DataConfig, description="problems")
    algorithm: dict[str, Any] = Field(default_factory=lambda: {"name": "grpo"}, description="algorithm name and its own hyperparameters")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="sampling for training")
    reward: RewardConfig = Field(default_factory=RewardConfig, description="verifiers, their weights, and reward shaping")
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimisation")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="held-out pass@k during training")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="checkpointing and resume")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="metrics and loggers")

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if "name" not in self.algorithm:
            raise ValueError("algorithm needs a 'name' (e.g. grpo)")
        if self.reward.overlong_buffer >= self.rollout.max_new_tokens:
            raise ValueError(f"reward.overlong_buffer={self.reward.overlong_buffer} must be below "
                             f"rollout.max_new_tokens={self.rollout.max_new_tokens}")
        return self


# ---------------------------------------------------------------- loading


def _parse_value(raw: str) -> Any:
    value = yaml.safe_load(raw) if raw != "" else ""
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
        try:
            return float(value)
        except ValueError:
            pass
    return value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """['train.lr=1e-4', 'algorithm.scale=none'] -> nested dict; values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form dotted.key=value")
        key, raw = item.split("=", 1)
        value = _parse_value(raw)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is already set to a value, not a section")
        node[parts[-1]] = value
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Known field names of the section at `loc` (for suggestions)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def format_validation_error(err: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"])
        key = prefix + ".".join(str(x) for x in loc)
        if e["type"] == "extra_forbidden":
            known = _fields_at(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"; did you mean '{(prefix + '.'.join(map(str, loc[:-1] + (close[0],))))}'?" if close else ""
            lines.append(f"unknown key '{key}'{hint} (allowed here: {', '.join(known)})")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{key or '<top level>'}: {e['msg']}{got_s}")
    return "\n".join(lines)


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> RunConfig:
    """Load YAML at `path` (or defaults if None), apply dotted overrides, validate
    (the algorithm too: see `check_algorithm`)."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(raw).__name__}")
    return config_from_dict(raw, overrides, where=f"{path}: " if path else "")


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None, where: str = "") -> RunConfig:
    """`load_config` for a recipe already read: apply overrides, validate; errors start with `where`."""
    raw = deep_merge(raw, parse_overrides(overrides or []))
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(where + format_validation_error(e, RunConfig)) from None
    check_model_path(cfg.model.path)
    try:
        check_algorithm(cfg)
    except ConfigError as e:
        raise ConfigError(where + str(e)) from None
    return cfg


def check_algorithm(cfg: RunConfig) -> None:
    """Build the algorithm once with the run's context (rollout.n, max_new_tokens), so that a bad
    combination (an option it lacks; GRPO with rollout.n = 1) stops at load, before any model
    loads. An algorithm named by import path whose module does not import here is left to the
    trainer, which builds it again: `rlvr eval` reads a run's config without its training code."""
    from rlvr.algorithms import build_algorithm, get_algorithm

    name = str(cfg.algorithm.get("name", ""))
    if ":" in name:
        try:
            get_algorithm(name)
        except ValueError:
            return
    build_algorithm(cfg.algorithm, max_new_tokens=cfg.rollout.max_new_tokens, group_size=cfg.rollout.n)


def check_model_path(path: str) -> None:
    """A path-like model that is not on disk is an error now, not deep inside from_pretrained."""
    if path == TINY_MODEL:
        return
    looks_local = path.startswith(("/", "./", "../", "~")) or os.path.isabs(path) or path.count("/") > 1
    if looks_local and not Path(path).expanduser().is_dir():
        raise ConfigError(f"model.path: no such model directory: {path}")


def to_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def describe(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """One line per key: 'train.lr (float = 1e-05): AdamW learning rate' (for --help-config)."""
    out = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(describe(ann, f"{prefix}{name}."))
            continue
        default = f.get_default(call_default_factory=True)
        out.append(f"{prefix}{name} = {default!r}: {f.description or ''}")
    return out
