"""Command line: `rlvr train CONFIG [dotted.key=value ...]`, `rlvr eval`, `rlvr sweep`, `rlvr report`,
`rlvr build-base`, and `rlvr launch [accelerate options] train ...` (rlvr/launch.py).

Also `python -m rlvr ...`, so `accelerate launch -m rlvr train ...` works.
"""

from __future__ import annotations

import argparse
import sys

from rlvr.config import ConfigError, UnimportedAlgorithmConfig, describe, load_config
from rlvr.eval.settings import add_arguments as add_eval_arguments


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if isinstance(cfg.algorithm, UnimportedAlgorithmConfig):  # eval may read such a config; training needs the code
        raise ConfigError(cfg.algorithm.reason)
    from rlvr.trainer import Trainer, check_run_dir

    done = check_run_dir(cfg, args.overwrite)  # another run in output_dir: one line; this one, done: say so
    if done is not None:
        import os

        from rlvr.rundir import done_line

        if os.environ.get("RANK", "0") in ("", "0"):
            print(done_line(cfg.output_dir, done))
        return 0
    trainer = Trainer(cfg, overwrite=args.overwrite)
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
    from pathlib import Path

    summary = Path(output_dir) / "eval" / "summary.md"
    if summary.is_file():  # the full eval: print its answer to the question, point to the rest
        text = summary.read_text()
        if "## The question" in text:
            print("\n" + text.split("## The question", 1)[1].split("\n## ", 1)[0].strip())
        print(f"\nfull eval (plots, every sample, perplexity): {summary.parent}/")
    print(f"rlvr: run written to {output_dir}")


def find_run_config(model: str | None) -> str | None:
    """The rlvr run config next to a trained model (runs/x/final -> runs/x/config.yaml)."""
    from pathlib import Path

    if not model:
        return None
    for cand in (Path(model).parent / "config.yaml", Path(model) / "rlvr_config.yaml"):
        if cand.is_file():
            return str(cand)
    return None


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlvr.eval.runner import evaluate_run
    from rlvr.eval.settings import overrides_from_args

    if args.server and (args.samples or not (args.config or args.model)):
        raise ConfigError(
            "--server samples the model from that URL: give the run's --config (or --model), not --samples"
        )
    cfg = load_config(args.config or find_run_config(args.model), args.overrides)
    base = cfg.model.path if args.base is None else (None if args.base == "none" else args.base)
    out = args.out or (str(Path(args.model).parent / "eval") if args.model else "runs/eval")
    result = evaluate_run(
        cfg,
        model=args.model,
        samples=args.samples,
        base=base,
        base_samples=args.base_samples,
        overrides=overrides_from_args(args),
        out_dir=out,
        label=args.label,
        engine=args.engine,
        server=args.server,
        server_model=args.server_model,
    )
    print((Path(out) / "summary.md").read_text())
    print(f"rlvr: eval written to {out} ({result['wall_time_s']:.0f} s)")
    return 0


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number >= 1")
    return int(text)


def shard_spec(text: str) -> tuple[int, int]:
    i, _, n = text.partition("/")
    if not (i.isdigit() and n.isdigit() and int(i) < int(n)):
        raise argparse.ArgumentTypeError(f"{text!r}: i/N with 0 <= i < N")
    return int(i), int(n)


def cmd_sweep(args: argparse.Namespace) -> int:
    from rlvr.sweep import run_sweep

    run_sweep(
        args.sweep,
        launcher=args.launcher,
        only=args.only,
        overrides=args.overrides,
        imports=args.imports,
        jobs=args.jobs,
        shard=args.shard,
    )
    if args.launcher == "inprocess" and args.shard is None:  # a shard's parent writes the report
        from rlvr.eval.report import write_sweep_report
        from rlvr.sweep import load_sweep

        out = write_sweep_report(load_sweep(args.sweep)[0].output_dir)
        print(out["md"].read_text())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rlvr.eval.report import write_sweep_report

    out = write_sweep_report(args.dir)
    print(out["md"].read_text())
    print("rlvr: wrote " + ", ".join(str(p) for p in out.values()))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from rlvr.databuild import SPECS, build, list_lines, recipe_lines

    if args.action == "list":
        print("\n".join(list_lines()))
        return 0
    names = [n for n, s in SPECS.items() if s.hub or s.package] if args.names == ["all"] else args.names
    if args.source is not None and len(names) != 1:
        raise ConfigError("--from reads one dataset's copy: name one dataset")
    for name in names:
        m = build(name, args.source, args.out, seed=args.seed, train_size=args.train_size)
        files = ", ".join(f"{args.out}/{name}/{f} ({v['rows']} rows)" for f, v in m["files"].items())
        dropped = "; dropped " + ", ".join(f"{n} ({why})" for why, n in m["dropped"].items()) if m["dropped"] else ""
        print(f"rlvr: {name}: {m['rows_in']} rows in -> {files}{dropped}")
        if m.get("functional_rows"):
            print(
                f"rlvr: {name}: {m['functional_rows']} functional rows call Solution() methods: score them with "
                "reward.functions: [{name: code_tests, builtin_results: false}]"
            )
        print(recipe_lines(name, args.out), end="")
    return 0


def cmd_build_base(args: argparse.Namespace) -> int:
    from rlvr.tiny import ensure_tiny_model

    print(ensure_tiny_model(args.cache_dir, force=args.force, variant=args.variant))
    return 0


RANK_WAIT = 10.0  # seconds a rank other than 0 waits before printing a config error


def say(line: str) -> None:
    """A config error's line on stderr, once under `accelerate launch`: every rank meets the same
    bad config, so rank 0 prints it and exits, and the launcher ends the others while they wait
    (`RANK_WAIT`); a rank that still lives after the wait (its own error) prints it, naming itself."""
    import os

    rank = os.environ.get("RANK", "0")
    if rank not in ("", "0"):
        import time

        time.sleep(RANK_WAIT)
        line = line.replace("rlvr: ", f"rlvr (rank {rank}): ", 1)
    sys.stderr.write(line + "\n")  # one write: two ranks' lines do not run together
    sys.stderr.flush()


def add_import_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first (repeatable), e.g. one that registers an algorithm: "
        "@register_algorithm('x') makes algorithm.name=x valid (rlvr/plugins.py; installed plugins' "
        "rlvr.algorithms entry points load by themselves)",
    )


def build_parser() -> argparse.ArgumentParser:
    """rlvr's argument parser: one subcommand per command (`launch` is handled before it)."""
    p = argparse.ArgumentParser(
        prog="rlvr", description="RL from verifiable rewards, with pass@k against the base model"
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a policy from a YAML recipe")
    t.add_argument("config", nargs="?", help="recipe YAML (e.g. recipes/tiny/grpo.yaml)")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 algorithm.scale=none")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="output_dir holds another run (or this one, finished): delete its checkpoints, metrics, final/ and "
        "eval/ and train afresh (without it such a run is refused, or a finished one reported done)",
    )
    t.add_argument(
        "--help-config",
        action="store_true",
        help="list every config key with its default and meaning, and every algorithm's options",
    )
    add_import_argument(t)
    t.set_defaults(func=cmd_train)
    e = sub.add_parser(
        "eval",
        help="pass@k, dSE, coverage and perplexity of a model against its base",
        description="The eval settings flags default to the run config's eval: section "
        "(n: eval.final_n or eval.n; lengths and batch size: rollout's).",
    )
    e.add_argument("overrides", nargs="*", help="dotted overrides of the run config, e.g. data.eval_size=500")
    e.add_argument(
        "--model", help="trained checkpoint (e.g. runs/tiny-grpo/final); its run's config.yaml gives data and base"
    )
    e.add_argument("--base", help="base checkpoint (default: the run config's model.path); 'none' skips the comparison")
    e.add_argument("--config", help="run config giving data, reward and eval settings (default: next to --model)")
    e.add_argument(
        "--samples",
        action="append",
        help="score this JSONL of completions instead of sampling --model (repeatable: merged)",
    )
    e.add_argument("--base-samples", action="append", help="JSONL of the base model's completions (repeatable)")
    e.add_argument(
        "--engine", choices=["hf", "vllm"], default="hf", help="what samples --model and --base: transformers or vLLM"
    )
    e.add_argument(
        "--server",
        help="sample the model from this OpenAI-compatible server instead (vllm serve, SGLang: its base URL, "
        "e.g. http://localhost:8000); start vllm with --generation-config vllm so its sampling is rlvr's",
    )
    e.add_argument("--server-model", help="the model name on --server (default: the one it lists)")
    add_eval_arguments(e)  # one flag per EvalSettings field, default: the run config's eval: section
    e.add_argument("--label", default="model", help="name of the evaluated model in tables and plots")
    e.add_argument("--out", help="eval directory (default: next to --model)")
    add_import_argument(e)
    e.set_defaults(func=cmd_eval)
    add_sweep_parser(sub)
    r = sub.add_parser("report", help="table and plots over a sweep's finished cells")
    r.add_argument("dir", help="sweep output directory")
    r.set_defaults(func=cmd_report)
    b = sub.add_parser("build-base", help="build (or find cached) the embedded tiny base model; prints its path")
    b.add_argument("--cache-dir", default=None)
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.add_argument("--variant", default="tiny", choices=["tiny", "tiny-hd32"], help="tiny-hd32: head_dim 32, for vLLM")
    b.set_defaults(func=cmd_build_base)
    add_data_parser(sub)
    sub.add_parser(
        "launch",
        help="accelerate launch [options] -m rlvr CMD ..., ending a failed run with the worker's one line and exit code",
        description="rlvr launch [accelerate launch options] train|eval|sweep ... (see rlvr/launch.py)",
    )
    return p


def add_sweep_parser(sub) -> None:
    """`rlvr sweep SWEEP.yaml [overrides] [--jobs N]` (rlvr/sweep.py)."""
    s = sub.add_parser("sweep", help="run a grid of training runs, each followed by its eval; resumable")
    s.add_argument("sweep", help="sweep YAML (e.g. recipes/sweeps/six_algorithms_tiny.yaml)")
    s.add_argument("overrides", nargs="*", help="dotted overrides for every cell, e.g. train.steps=2")
    s.add_argument(
        "--launcher",
        choices=["inprocess", "print", "accelerate"],
        default="inprocess",
        help="run cells here, print their accelerate commands, or run those commands",
    )
    s.add_argument("--only", type=int, help="run only the first N cells")
    s.add_argument("--jobs", type=positive_int, default=1, help="cells at a time, each in its own process (default 1)")
    s.add_argument("--shard", type=shard_spec, help=argparse.SUPPRESS)  # i/N: what --jobs N gives child i
    add_import_argument(s)
    s.set_defaults(func=cmd_sweep)


def add_data_parser(sub) -> None:
    """`rlvr data list|build`: the paper's datasets as rlvr JSONL (rlvr/databuild.py has the rules)."""
    from rlvr.databuild import list_lines

    d = sub.add_parser(
        "data",
        help="build the paper's train/eval sets (Omni-MATH-Rule, GSM8K, MATH500, ..., LiveCodeBench) as JSONL",
        description="rlvr data build NAME [--from PATH] [--out DIR]: read the hub (or a local copy) and write "
        "DIR/NAME/{train,test}.jsonl and manifest.json. The datasets and their rules:\n\n" + "\n".join(list_lines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("action", choices=["list", "build"], help="list the datasets and rules, or build some")
    d.add_argument(
        "names", nargs="*", default=["all"], help="datasets to build (default all: every one the hub or a package has)"
    )
    d.add_argument(
        "--from", dest="source", help="a local copy (.jsonl/.json/.parquet file or directory) instead of the hub"
    )
    d.add_argument("--out", default="data", help="output directory (default: data)")
    d.add_argument("--seed", type=int, default=0, help="seed of the Omni-MATH-Rule train/test split")
    d.add_argument("--train-size", type=int, default=2000, help="Omni-MATH-Rule train rows (the paper's 2,000)")
    d.set_defaults(func=cmd_data)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if argv[:1] == ["launch"]:  # accelerate's options pass through untouched: not an argparse subcommand
        from rlvr.launch import main as launch

        return launch(argv[1:])
    p = build_parser()
    args, extra = p.parse_known_args(argv)
    if extra:  # overrides after an option (`rlvr sweep S.yaml --jobs 2 train.steps=2`) are overrides still
        if not isinstance(getattr(args, "overrides", None), list) or any(a.startswith("-") for a in extra):
            p.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    if args.command == "train" and args.config is None and not args.help_config:
        p.error("train needs a CONFIG file")
    from rlvr.errors import RunError

    try:
        if getattr(args, "imports", None):  # plugins first: the config names what they register
            from rlvr.plugins import import_modules

            import_modules(args.imports)
        if getattr(args, "help_config", False):  # after the imports: their algorithms are listed too
            print("\n".join(describe()))
            return 0
        return args.func(args)
    except ConfigError as e:
        say(f"rlvr: config error: {e}")
        return 2
    except RunError as e:  # disk full, run directory in use, non-finite weights: one line, no traceback
        print(f"rlvr: error: {e}", file=sys.stderr)  # every rank: it may be one rank's (its batch's rewards)
        return 1
    except KeyboardInterrupt:
        print("rlvr: interrupted; the latest checkpoint (if any) resumes the run", file=sys.stderr)
        return 130
    except RuntimeError as e:
        if not lost_peer(e):
            raise
        import os

        reason = str(e).split("] ", 1)[-1].split(". ", 1)[0]
        print(
            f"rlvr (rank {os.environ.get('RANK', '?')}): error: another process of this run is gone ({reason}); "
            "the launcher names it; the latest checkpoint (if any) resumes the run",
            file=sys.stderr,
        )
        return 1


PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "communicator was aborted")


def lost_peer(e: BaseException) -> bool:
    """A collective failed because another process of the run died (killed, out of memory): under a
    launcher, its traceback says nothing the launcher's line does not."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and any(s in str(e) for s in PEER_GONE)


if __name__ == "__main__":
    raise SystemExit(main())
