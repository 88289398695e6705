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
    m = r[label]
    b = r.get("base_metrics")
    comp = r.get("comparison")
    curves = {label: _curve(m)}
    hists = {label: m["accuracy_histogram"]}
    if b:
        curves = {"base": _curve(b), **curves}
        hists = {"base": b["accuracy_histogram"], **hists}
    plots = [
        plot_pass_at_k(curves, out / "pass_at_k.png", base_label="base",
                       crossover={label: comp["crossover_k"]} if comp else None),
        plot_accuracy_histogram(hists, out / "accuracy_histogram.png"),
    ]
    ppl = r.get("perplexity")
    if ppl:
        names = {"base_on_base": "PPL_base(Y_base)", "base_on_model": f"PPL_base(Y_{label})",
                 "model_on_model": f"PPL_{label}(Y_{label})"}
        plots.append(plot_perplexity_box({names[k]: v for k, v in ppl["values"].items()}, out / "perplexity.png"))
    (out / "summary.md").write_text(summary_markdown(r))
    return plots


def summary_markdown(r: dict[str, Any]) -> str:
    label = r["label"]
    m, b, comp = r[label], r.get("base_metrics"), r.get("comparison")
    spec = r["spec"]
    ks = sorted(int(k) for k in m["pass_at_k"])
    lines = [f"# Eval: {label}" + (" vs base" if b else ""), ""]
    lines.append(f"{m['problems']} problems, n = {m['n_min']}" + (f"..{m['n_max']}" if m["n_max"] != m["n_min"] else "")
                 + f" samples each, temperature {spec['temperature']}, top-p {spec['top_p']}.")
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
            "- Crossover k*: " + (f"the base matches or beats {label} from k = {comp['crossover_k']} on."
                                   if comp["crossover_k"] else f"none: {label} stays above the base at every k measured."),
            f"- Solvable problems (at least one correct sample): both {cov['both']}, base only {cov['base_only']}, "
            f"{label} only {cov['model_only']}, neither {cov['neither']} (Jaccard {cov['jaccard']:.2f}).",
            "",
            verdict(b, m, cov, label),
            "",
        ]
        lines += notes(comp)
    lines += ["## pass@k", "", "| k | " + ("base | " if b else "") + f"{label} |", "|---|" + ("---|" if b else "") + "---|"]
    for k in ks:
        mk = _get(m, k)
        row = f"| {k} | "
        if b:
            bk = _get(b, k)
            row += f"{pct(bk['mean'])} [{pct(bk['lo'])}, {pct(bk['hi'])}] | " if bk else "| "
        lines.append(row + f"{pct(mk['mean'])} [{pct(mk['lo'])}, {pct(mk['hi'])}] |")
    lines += ["", "## Hygiene", "", "| | " + ("base | " if b else "") + f"{label} |", "|---|" + ("---|" if b else "") + "---|"]
    for key, name in (("avg_at_n", "avg@n"), ("distinct_answers_mean", "distinct answers / problem"),
                      ("length_mean", "response tokens"), ("length_correct_mean", "tokens, correct"),
                      ("length_wrong_mean", "tokens, wrong"), ("truncation_rate", "truncated"),
                      ("extraction_failure_rate", "no answer extracted")):
        fmt = (lambda v: pct(v)) if key in ("avg_at_n", "truncation_rate", "extraction_failure_rate") else (lambda v: "n/a" if v is None else f"{v:.2f}")
        lines.append(f"| {name} | " + (f"{fmt(b.get(key))} | " if b else "") + f"{fmt(m.get(key))} |")
    ppl = r.get("perplexity")
    if ppl:
        med = ppl["median"]
        lines += ["", "## Perplexity (medians)", "",
                  f"- PPL_base(Y_base) {med['base_on_base']:.3f}, PPL_base(Y_{label}) {med['base_on_model']:.3f}, "
                  f"PPL_{label}(Y_{label}) {med['model_on_model']:.3f}.",
                  f"- Mean token entropy: base {ppl['entropy']['base']:.3f}, {label} {ppl['entropy']['model']:.3f}.",
                  "- A PPL_base(Y_model) close to PPL_base(Y_base) means the trained model's answers are ones the base "
                  "already found likely (Yue et al. 2025, sec. 4)."]
    lines += ["", "Plots: pass_at_k.png, accuracy_histogram.png" + (", perplexity.png" if ppl else "") + ".",
              "Every sample: samples_*.jsonl. All numbers: metrics.json.", ""]
    return "\n".join(lines)


def _get(m: dict, k: int) -> dict | None:
    pk = m["pass_at_k"]
    return pk.get(k, pk.get(str(k)))


def verdict(b: dict, m: dict, cov: dict, label: str) -> str:
    """One plain sentence for the reader; the numbers above are what counts."""
    hist_m, hist_b = m["accuracy_histogram"], b["accuracy_histogram"]
    zero_up = hist_m.get("0", 0) > hist_b.get("0", 0)
    one_up = hist_m.get("1", 0) > hist_b.get("1", 0)
    if cov["model_only"] > cov["base_only"]:
        return (f"Reading: {label} solves {cov['model_only']} problems the base never solved in its samples and "
                f"loses {cov['base_only']}; on this eval set training expanded coverage.")
    shape = " More problems sit at accuracy exactly 0 and exactly 1 than for the base (sharpening)." if zero_up and one_up else ""
    return (f"Reading: {label} gains {cov['model_only']} problems and loses {cov['base_only']} that the base could solve; "
            f"its gains are problems the base already sampled correctly, so training sharpened rather than expanded.{shape}")


def notes(comp: dict) -> list[str]:
    return [f"> note: {n}" for n in comp.get("notes", [])] + ([""] if comp.get("notes") else [])
