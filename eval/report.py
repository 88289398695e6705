"""Human-facing output of an eval directory: PNG plots and summary.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .plots import plot_accuracy_histogram, plot_pass_at_k, plot_perplexity_box


def _curve(m: dict) -> dict[int, tuple[float, float, float]]:
    return {int(k): (v["mean"], v["lo"], v["hi"]) for k, v in m["pass_at_k"].items()}


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def write_eval_report(out: Path, r: dict[str, Any]) -> list[Path]:
    label = r["label"]
    m = r["model_metrics"]
    b = r.get("base_metrics")
    comp = r.get("comparison")
    curves = {label: _curve(m)}
    hists = {label: m["accuracy_histogram"]}
    if b:
        curves = {"base": _curve(b), **curves}
        hists = {"base": b["accuracy_histogram"], **hists}
    plots = [
        plot_pass_at_k(
            curves, out / "pass_at_k.png", base_label="base", crossover={label: comp["crossover_k"]} if comp else None
        ),
        plot_accuracy_histogram(hists, out / "accuracy_histogram.png"),
    ]
    ppl = r.get("perplexity")
    if ppl:
        names = {
            "base_on_base": "PPL_base(Y_base)",
            "base_on_model": f"PPL_base(Y_{label})",
            "model_on_model": f"PPL_{label}(Y_{label})",
        }
        plots.append(plot_perplexity_box({names[k]: v for k, v in ppl["values"].items()}, out / "perplexity.png"))
    (out / "summary.md").write_text(summary_markdown(r))
    return plots


def summary_markdown(r: dict[str, Any]) -> str:
    label = r["label"]
    m, b, comp = r["model_metrics"], r.get("base_metrics"), r.get("comparison")
    spec = r["spec"]
    ks = sorted(int(k) for k in m["pass_at_k"])
    lines = [f"# Eval: {label}" + (" vs base" if b else ""), ""]
    lines.append(
        f"{m['problems']} problems, n = {m['n_min']}"
        + (f"..{m['n_max']}" if m["n_max"] != m["n_min"] else "")
        + f" samples each, temperature {spec['temperature']}, top-p {spec['top_p']}."
    )
    lines.append("")
    if b and comp:
        cov, dse = comp["coverage"], comp["dse"]
        K = comp["K"]
        b1, m1 = _get(b, 1), _get(m, 1)
        lines += [
            "## The question",
            "",
            f"- pass@1: base {pct(b1['mean'])} -> {label} {pct(m1['mean'])}.",
            f"- pass@{K}: base {pct(_get(b, K)['mean'])}, {label} {pct(_get(m, K)['mean'])}.",
            f"- Sampling-efficiency gap dSE = pass@{K}(base) - pass@1({label}) = {100 * dse['dse']:.1f} points "
            f"(95% CI {100 * dse['lo']:.1f} to {100 * dse['hi']:.1f}); lower is better.",
            "- Crossover k*: "
            + (
                f"the base matches or beats {label} from k = {comp['crossover_k']} on."
                if comp["crossover_k"]
                else f"none: {label} stays above the base at every k measured."
            ),
            f"- Solvable problems (at least one correct sample): both {cov['both']}, base only {cov['base_only']}, "
            f"{label} only {cov['model_only']}, neither {cov['neither']} (Jaccard {cov['jaccard']:.2f}).",
            "",
            verdict(b, m, cov, label),
            "",
        ]
        lines += notes(comp)
    lines += [
        "## pass@k",
        "",
        "| k | " + ("base | " if b else "") + f"{label} |",
        "|---|" + ("---|" if b else "") + "---|",
    ]
    for k in ks:
        mk = _get(m, k)
        row = f"| {k} | "
        if b:
            bk = _get(b, k)
            row += f"{pct(bk['mean'])} [{pct(bk['lo'])}, {pct(bk['hi'])}] | " if bk else "| "
        lines.append(row + f"{pct(mk['mean'])} [{pct(mk['lo'])}, {pct(mk['hi'])}] |")
    lines += [
        "",
        "## Hygiene",
        "",
        "| | " + ("base | " if b else "") + f"{label} |",
        "|---|" + ("---|" if b else "") + "---|",
    ]
    for key, name in (
        ("avg_at_n", "avg@n"),
        ("distinct_answers_mean", "distinct answers / problem"),
        ("length_mean", "response tokens"),
        ("length_correct_mean", "tokens, correct"),
        ("length_wrong_mean", "tokens, wrong"),
        ("truncation_rate", "truncated"),
        ("extraction_failure_rate", "no answer extracted"),
    ):
        fmt = (
            (lambda v: pct(v))
            if key in ("avg_at_n", "truncation_rate", "extraction_failure_rate")
            else (lambda v: "n/a" if v is None else f"{v:.2f}")
        )
        lines.append(f"| {name} | " + (f"{fmt(b.get(key))} | " if b else "") + f"{fmt(m.get(key))} |")
    ppl = r.get("perplexity")
    if ppl:
        med = ppl["median"]
        lines += [
            "",
            "## Perplexity (medians)",
            "",
            f"- PPL_base(Y_base) {med['base_on_base']:.3f}, PPL_base(Y_{label}) {med['base_on_model']:.3f}, "
            f"PPL_{label}(Y_{label}) {med['model_on_model']:.3f}.",
            f"- Mean token entropy: base {ppl['entropy']['base']:.3f}, {label} {ppl['entropy']['model']:.3f}.",
            "- A PPL_base(Y_model) close to PPL_base(Y_base) means the trained model's answers are ones the base "
            "already found likely (Yue et al. 2025, sec. 4).",
        ]
    lines += [
        "",
        "Plots: pass_at_k.png, accuracy_histogram.png" + (", perplexity.png" if ppl else "") + ".",
        "Every sample: samples_*.jsonl. All numbers: metrics.json.",
        "",
    ]
    return "\n".join(lines)


def _get(m: dict, k: int) -> dict | None:
    pk = m["pass_at_k"]
    return pk.get(k, pk.get(str(k)))


def verdict(b: dict, m: dict, cov: dict, label: str) -> str:
    """One plain sentence for the reader; the numbers above are what counts."""
    hist_m, hist_b = m["accuracy_histogram"], b["accuracy_histogram"]
    shape = (
        " More problems sit at accuracy exactly 0 and exactly 1 than for the base: the distribution sharpened."
        if hist_m.get("0", 0) > hist_b.get("0", 0) and hist_m.get("1", 0) > hist_b.get("1", 0)
        else ""
    )
    gained, lost = cov["model_only"], cov["base_only"]
    net = gained - lost
    if net > 0:
        return (
            f"Reading: {label} solves {gained} problems the base never solved in its samples and loses {lost}; "
            f"on this eval set coverage grew by {net}.{shape}"
        )
    return (
        f"Reading: {label} solves {gained} problems the base never solved in its samples and loses {lost} "
        f"(net {net:+d}); coverage did not grow, so on this eval set training sharpened what the base already "
        f"samples rather than expanding it.{shape}"
    )


def notes(comp: dict) -> list[str]:
    return [f"> note: {n}" for n in comp.get("notes", [])] + ([""] if comp.get("notes") else [])


# ---------------------------------------------------------------- sweeps


def gather_cells(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One record per finished cell: its settings, eval metrics and wall time."""
    import json

    rows = []
    for cell in sorted(Path(sweep_dir).iterdir()):
        meta, metrics = cell / "cell.json", cell / "eval" / "metrics.json"
        if not (cell.is_dir() and meta.is_file() and metrics.is_file()):
            continue
        settings = json.loads(meta.read_text())["settings"]
        r = json.loads(metrics.read_text())
        steps = (
            [json.loads(l) for l in (cell / "metrics.jsonl").read_text().splitlines() if l.strip()]
            if (cell / "metrics.jsonl").is_file()
            else []
        )
        rows.append(
            {
                "cell": cell.name,
                "settings": settings,
                "result": r,
                "train_time_s": sum(s.get("time/step", 0.0) for s in steps),
                "eval_time_s": r.get("wall_time_s", 0.0),
            }
        )
    return rows


def write_sweep_report(sweep_dir: str | Path) -> dict[str, Path]:
    """report.md, report.csv, pass_at_k_all.png and dse_bars.png, seeds aggregated as mean and spread."""
    import csv

    import numpy as np

    from .plots import plot_dse_bars

    sweep_dir = Path(sweep_dir)
    cells = gather_cells(sweep_dir)
    if not cells:
        raise FileNotFoundError(f"{sweep_dir}: no finished cells (each needs cell.json and eval/metrics.json)")
    groups: dict[str, list[dict]] = {}
    for c in cells:
        key = ", ".join(f"{k}={v}" for k, v in c["settings"].items() if k != "seed") or "default"
        groups.setdefault(key, []).append(c)

    def stat(vals):
        vals = [v for v in vals if v is not None]
        if not vals:
            return None, None
        return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0

    table, curves, dse_bars = [], {}, {}
    base_curve = None
    for key, cs in groups.items():
        rec = {"setting": key, "seeds": len(cs)}
        K = cs[0]["result"]["comparison"]["K"] if "comparison" in cs[0]["result"] else None
        per = {
            "pass@1": [_get(c["result"]["model_metrics"], 1)["mean"] for c in cs],
            f"pass@{K}": [(_get(c["result"]["model_metrics"], K) or {}).get("mean") for c in cs] if K else [],
            f"base pass@{K}": [
                (_get(c["result"]["base_metrics"], K) or {}).get("mean") for c in cs if "base_metrics" in c["result"]
            ]
            if K
            else [],
            "dSE": [c["result"]["comparison"]["dse"]["dse"] for c in cs if "comparison" in c["result"]],
            "k*": [c["result"]["comparison"]["crossover_k"] for c in cs if "comparison" in c["result"]],
            "gained": [c["result"]["comparison"]["coverage"]["model_only"] for c in cs if "comparison" in c["result"]],
            "lost": [c["result"]["comparison"]["coverage"]["base_only"] for c in cs if "comparison" in c["result"]],
            "wall time (s)": [c["train_time_s"] + c["eval_time_s"] for c in cs],
        }
        for name, vals in per.items():
            rec[name], rec[name + " sd"] = stat(vals)
        table.append(rec)
        first = cs[0]["result"]
        curves[key] = {
            int(k): float(np.mean([_get(c["result"]["model_metrics"], int(k))["mean"] for c in cs]))
            for k in first["model_metrics"]["pass_at_k"]
        }
        if "base_metrics" in first and base_curve is None:
            base_curve = {int(k): v["mean"] for k, v in first["base_metrics"]["pass_at_k"].items()}
        if rec["dSE"] is not None:
            dse_bars[key] = (rec["dSE"], rec["dSE"] - (rec["dSE sd"] or 0), rec["dSE"] + (rec["dSE sd"] or 0))
    cols = [c for c in table[0] if not c.endswith(" sd") and c not in ("setting", "seeds")]
    md = [
        "# Sweep report",
        "",
        f"{len(cells)} finished cells in {sweep_dir}; seeds aggregated as mean ± sd.",
        "",
        "| setting | seeds | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for rec in table:
        cells_txt = []
        for c in cols:
            v, sd = rec[c], rec[c + " sd"]
            if v is None:
                cells_txt.append("n/a")
            elif c.startswith(("pass@", "base pass@", "dSE")):
                cells_txt.append(f"{100 * v:.1f} ± {100 * sd:.1f}")
            else:
                cells_txt.append(f"{v:.1f} ± {sd:.1f}")
        md.append(f"| {rec['setting']} | {rec['seeds']} | " + " | ".join(cells_txt) + " |")
    md += [
        "",
        "pass@k and dSE in points (%); k* = smallest k where the base matches or beats the model;",
        "gained / lost = problems solvable by the model only / by the base only.",
        "Plots: pass_at_k_all.png, dse_bars.png.",
        "",
    ]
    out = {"md": sweep_dir / "report.md", "csv": sweep_dir / "report.csv"}
    out["md"].write_text("\n".join(md))
    with open(out["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    all_curves = ({"base": base_curve} if base_curve else {}) | curves
    out["pass_at_k"] = plot_pass_at_k(all_curves, sweep_dir / "pass_at_k_all.png", base_label="base")
    if dse_bars:
        out["dse"] = plot_dse_bars(dse_bars, sweep_dir / "dse_bars.png")
    return out
