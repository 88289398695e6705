"""Command line: `rlvr train CONFIG [dotted.key=value ...]`, `rlvr build-base`.

Also `python -m rlvr ...`, so `accelerate launch -m rlvr train ...` works.
"""

from __future__ import annotations

import argparse
import sys

from rlvr.config import ConfigError, describe, load_config


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    from rlvr.trainer import Trainer

    trainer = Trainer(cfg)
    result = trainer.fit()
    if trainer.accelerator.is_main_process:
        print_eval_summary(result["evals"], cfg.output_dir)
    return 0


def print_eval_summary(evals: list[dict], output_dir: str) -> None:
    if not evals:
        print(f"rlvr: run written to {output_dir}")
        return
    keys = [k for k in evals[0] if k.startswith("pass@")]
    print(f"\nheld-out eval ({evals[0]['problems']} problems x {evals[0]['n']} samples):")
    for e in evals:
        print(f"  {e['tag']:>10} (step {e['step']:>4}): " + "  ".join(f"{k} {100 * e[k]:5.1f}%" for k in keys))
    tags = {e["tag"]: e for e in evals}
    if "base" in tags and "final" in tags:
        d = 100 * (tags["final"]["pass@1"] - tags["base"]["pass@1"])
        print(f"  pass@1 change: {d:+.1f} points")
    print(f"rlvr: run written to {output_dir}")


def cmd_build_base(args: argparse.Namespace) -> int:
    from rlvr.tiny import ensure_tiny_model

    print(ensure_tiny_model(args.cache_dir, force=args.force))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rlvr", description="RL from verifiable rewards, with pass@k against the base model")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a policy from a YAML recipe")
    t.add_argument("config", nargs="?", help="recipe YAML (e.g. recipes/tiny/grpo.yaml)")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 algorithm.scale=none")
    t.add_argument("--help-config", action="store_true", help="list every config key with its default and meaning")
    t.set_defaults(func=cmd_train)
    b = sub.add_parser("build-base", help="build (or find cached) the embedded tiny base model; prints its path")
    b.add_argument("--cache-dir", default=None)
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.set_defaults(func=cmd_build_base)
    args = p.parse_args(argv)
    if getattr(args, "help_config", False):
        print("\n".join(describe()))
        return 0
    if args.command == "train" and args.config is None:
        p.error("train needs a CONFIG file")
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"rlvr: config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlvr: interrupted; the latest checkpoint (if any) resumes the run", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
