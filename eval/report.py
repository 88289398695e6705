"""Human-facing output of an eval directory: PNG plots and summary.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .plots import plot_accuracy_histogram, plot_pass_at_k, plot_pass_at_k_panels, plot_perplexity_box


def _curve(m: dict) -> dict[int, tuple[float, float, float]]:
    return {int(k): (v["mean"], v["lo"], v["hi"]) for k, v in m["pass_at_k"].items()}


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


# Intervals in a metrics.json written before it recorded how (before the two-level default) were one-level.
OLD_INTERVAL = "95% CI, one-level bootstrap (problems)"


def interval_of(m: dict) -> str:
    """How the eval's intervals were made, as its metrics.json says."""
    return m.get("interval", OLD_INTERVAL)


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
    """summary.md of one eval: the question (with a base), pass@k, hygiene, perplexity."""
    label = r["label"]
    m, b, comp = r["model_metrics"], r.get("base_metrics"), r.get("comparison")
    spec = r["spec"]
    lines = [f"# Eval: {label}" + (" vs base" if b else ""), ""]
    lines.append(
        f"{m['problems']} problems, n = {m['n_min']}"
        + (f"..{m['n_max']}" if m["n_max"] != m["n_min"] else "")
        + f" samples each, temperature {spec['temperature']}, top-p {spec['top_p']}."
    )
    lines.append("")
    if b and comp:
        lines += _question_lines(m, b, comp, label)
    lines += _pass_at_k_lines(m, b, label) + _hygiene_lines(m, b, label)
    ppl = r.get("perplexity")
    if ppl:
        lines += _perplexity_lines(ppl, label)
    lines += [
        "",
        "Plots: pass_at_k.png, accuracy_histogram.png" + (", perplexity.png" if ppl else "") + ".",
        "Every sample: samples_*.jsonl. All numbers: metrics.json.",
        "",
    ]
    return "\n".join(lines)


def _question_lines(m: dict, b: dict, comp: dict, label: str) -> list[str]:
    cov, dse = comp["coverage"], comp["dse"]
    K = comp["K"]
    b1, m1 = _get(b, 1), _get(m, 1)
    lines = [
        "## The question",
        "",
        f"- pass@1: base {pct(b1['mean'])} -> {label} {pct(m1['mean'])}.",
        f"- pass@{K}: base {pct(_get(b, K)['mean'])}, {label} {pct(_get(m, K)['mean'])}.",
        f"- Sampling-efficiency gap dSE = pass@{K}(base) - pass@1({label}) = {100 * dse['dse']:.1f} points "
        f"({interval_of(m)}: {100 * dse['lo']:.1f} to {100 * dse['hi']:.1f}); lower is better.",
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
    return lines + notes(comp)


def _pass_at_k_lines(m: dict, b: dict | None, label: str) -> list[str]:
    lines = [
        "## pass@k",
        "",
        f"In percent, with [{interval_of(m)}].",
        "",
        "| k | " + ("base | " if b else "") + f"{label} |",
        "|---|" + ("---|" if b else "") + "---|",
    ]
    for k in sorted(int(k) for k in m["pass_at_k"]):
        mk = _get(m, k)
        row = f"| {k} | "
        if b:
            bk = _get(b, k)
            row += f"{pct(bk['mean'])} [{pct(bk['lo'])}, {pct(bk['hi'])}] | " if bk else "| "
        lines.append(row + f"{pct(mk['mean'])} [{pct(mk['lo'])}, {pct(mk['hi'])}] |")
    return lines


def _hygiene_lines(m: dict, b: dict | None, label: str) -> list[str]:
    lines = [
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
    return lines


def _perplexity_lines(ppl: dict, label: str) -> list[str]:
    med = ppl["median"]
    return [
        "",
        "## Perplexity (medians)",
        "",
        f"- PPL_base(Y_base) {med['base_on_base']:.3f}, PPL_base(Y_{label}) {med['base_on_model']:.3f}, "
        f"PPL_{label}(Y_{label}) {med['model_on_model']:.3f}.",
        f"- Mean token entropy: base {ppl['entropy']['base']:.3f}, {label} {ppl['entropy']['model']:.3f}.",
        "- A PPL_base(Y_model) close to PPL_base(Y_base) means the trained model's answers are ones the base "
        "already found likely (Yue et al. 2025, sec. 4).",
    ]


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

SESSIONS = "sessions.jsonl"  # one line per `rlvr sweep` session that worked on a cell (rlvr/sweep.py writes it)


def session_seconds(cell: Path) -> tuple[float, int, int] | None:
    """(seconds, sessions, unreadable lines) from a cell's sessions.jsonl; None if it has none."""
    path = Path(cell) / SESSIONS
    if not path.is_file():
        return None
    total, count, bad = 0.0, 0, 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            total += float(json.loads(line)["seconds"])
            count += 1
        except (ValueError, KeyError, TypeError):  # a line torn by a kill: counted, named in the report
            bad += 1
    return total, count, bad


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        from rlvr.errors import ConfigError

        raise ConfigError(f"{path}: not readable JSON ({e}); re-run that cell's eval or remove the cell") from None


def gather_cells(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One record per finished cell: its settings, eval metrics and wall time.

    Wall time is the sum of every `rlvr sweep` session that worked on the cell (sessions.jsonl),
    a resumed cell's interrupted sessions included. A cell without that log (run before it was
    kept, or by hand) gets its training steps' time plus its last eval's, a lower bound, marked so.
    """
    rows = []
    for cell in sorted(Path(sweep_dir).iterdir()):
        meta, metrics = cell / "cell.json", cell / "eval" / "metrics.json"
        if not (cell.is_dir() and meta.is_file() and metrics.is_file()):
            continue
        info = _read_json(meta)
        if not isinstance(info, dict) or not isinstance(info.get("settings"), dict):
            from rlvr.errors import ConfigError

            raise ConfigError(f"{meta}: no settings mapping: not a sweep cell's cell.json")
        r = _read_json(metrics)
        if not isinstance(r, dict) or not isinstance(r.get("model_metrics"), dict):
            from rlvr.errors import ConfigError

            raise ConfigError(f"{metrics}: no model_metrics: not the metrics.json of `rlvr eval`")
        sessions = session_seconds(cell)
        if sessions is not None:
            wall, exact, torn = sessions[0], True, sessions[2]
        else:
            steps = []
            if (cell / "metrics.jsonl").is_file():
                for line in (cell / "metrics.jsonl").read_text().splitlines():
                    try:
                        steps.append(json.loads(line))
                    except ValueError:
                        continue
            wall = sum(s.get("time/step") or 0.0 for s in steps if isinstance(s, dict)) + (r.get("wall_time_s") or 0.0)
            exact, torn = False, 0
        rows.append(
            {
                "cell": cell.name,
                "settings": info["settings"],
                "result": r,
                "wall_time_s": wall,
                "wall_time_exact": exact,
                "torn_session_lines": torn,
            }
        )
    return rows


def _counts(m: dict | None) -> tuple[list[int], list[int]] | None:
    if not m or "counts" not in m:
        return None
    return m["counts"]["n"], m["counts"]["c"]


def _fmt(v: float | None, sd: float | None, points: bool) -> str:
    """A table cell: the value, and ± sd only when there is a spread (several seeds)."""
    if v is None:
        return "n/a"
    scale = 100.0 if points else 1.0
    return f"{scale * v:.1f}" + ("" if sd is None else f" ± {scale * sd:.1f}")


def _k_star_text(values: list[int | None]) -> str:
    """Each seed's k*, as integers ("none": the model stays above the base at every k)."""
    return " / ".join("none" if v is None else str(int(v)) for v in values)


def _group_stats(cs: list[dict], K: int | None, notes: list[str], key: str) -> dict[str, Any]:
    """The table row of one setting (its seeds' cells): fractions here, shown in points."""
    import numpy as np

    from .metrics import bootstrap_pass_at_k_combination

    def stat(vals):
        vals = [v for v in vals if v is not None]
        if not vals:
            return None, None
        return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)

    res = [c["result"] for c in cs]
    comp = [r.get("comparison") for r in res]
    rec: dict[str, Any] = {"setting": key, "seeds": len(cs), "K": K}
    rec["pass@1"] = stat([_get(r["model_metrics"], 1)["mean"] for r in res])
    rec["pass@K"] = stat([(_get(r["model_metrics"], K) or {}).get("mean") for r in res] if K else [])
    rec["base pass@K"] = stat([(_get(r["base_metrics"], K) or {}).get("mean") for r in res if "base_metrics" in r])
    rec["dSE"] = stat([c["dse"]["dse"] for c in comp if c])
    rec["dSE CI"] = rec["delta CI"] = None
    spec = res[0].get("spec", {})
    boot = {"resamples": int(spec.get("resamples", 1000)), "seed": int(spec.get("seed", 0))}
    if K and all(comp) and all(_counts(r.get("base_metrics")) and _counts(r["model_metrics"]) for r in res):
        S = len(res)
        terms = [(*_counts(r["base_metrics"]), [K], 1.0 / S) for r in res]
        terms += [(*_counts(r["model_metrics"]), [1], -1.0 / S) for r in res]
        try:  # dSE of the seed mean, paired over problems: base and every seed's model on the same draws
            (rec["dSE CI"],) = bootstrap_pass_at_k_combination(terms, **boot)
            # pass@K of the seed mean minus the base's, paired the same way: Yue et al.'s question at k = K
            diff = [(*_counts(r["model_metrics"]), [K], 1.0 / S) for r in res]
            (rec["delta CI"],) = bootstrap_pass_at_k_combination(
                [(*_counts(res[0]["base_metrics"]), [K], -1.0), *diff], **boot
            )
        except ValueError as e:
            notes.append(f"{key}: no dSE interval ({e})")
    elif K:
        notes.append(f"{key}: no dSE interval (a metrics.json without per-problem counts)")
    rec["k*"] = [c["crossover_k"] for c in comp if c]
    rec["gained"] = stat([c["coverage"]["model_only"] for c in comp if c])
    rec["lost"] = stat([c["coverage"]["base_only"] for c in comp if c])
    rec["wall time (s)"] = stat([c["wall_time_s"] for c in cs])
    rec["wall_exact"] = all(c["wall_time_exact"] for c in cs)
    for c in cs:
        if c["torn_session_lines"]:
            notes.append(f"{c['cell']}: {c['torn_session_lines']} unreadable line(s) in {SESSIONS} not counted")
    # pass@k curve of the seed mean, with its bootstrap band, on the grid every seed has
    ks = sorted(set.intersection(*({int(k) for k in r["model_metrics"]["pass_at_k"]} for r in res)))
    if all(_counts(r["model_metrics"]) for r in res):
        band = bootstrap_pass_at_k_combination(
            [(*_counts(r["model_metrics"]), ks, 1.0 / len(res)) for r in res], **boot
        )
        rec["curve"] = dict(zip(ks, band, strict=True))
    else:  # a metrics.json without per-problem counts (not written by rlvr eval): the mean, no band
        rec["curve"] = {k: float(np.mean([_get(r["model_metrics"], k)["mean"] for r in res])) for k in ks}
        notes.append(f"{key}: no pass@k band (a metrics.json without per-problem counts)")
    return rec


def sweep_panels(sweep_dir: Path) -> tuple[str | None, dict[str, list[str]], str | None]:
    """The sweep file's method axis, report.panels and report.versus, as `rlvr sweep` saved them in
    sweep.json ({} and None for a sweep without them or written before they were saved)."""
    meta = sweep_dir / "sweep.json"
    info = _read_json(meta) if meta.is_file() else {}
    info = info if isinstance(info, dict) else {}
    panels = info.get("panels")
    return info.get("method_axis"), (panels if isinstance(panels, dict) else {}), info.get("versus")


def _versus(table: list[dict], groups: dict[str, list[dict]], ref: str, K: int | None, notes: list[str]) -> None:
    """rec["versus CI"] of every setting but `ref`: the seed mean's pass@K minus `ref`'s seed mean's, with
    the paired two-level interval (both settings' cells scored on the same problems)."""
    from .metrics import bootstrap_pass_at_k_combination

    if ref not in groups or not K:
        notes.append(f"report.versus: no finished cells of {ref}" if K else "report.versus: no common K")
        return
    theirs = [r["result"] for r in groups[ref]]
    for rec in table:
        if rec["setting"] == ref:
            continue
        ours = [c["result"] for c in groups[rec["setting"]]]
        if not all(_counts(r["model_metrics"]) for r in ours + theirs):
            notes.append(f"{rec['setting']}: no interval versus {ref} (a metrics.json without per-problem counts)")
            continue
        terms = [(*_counts(r["model_metrics"]), [K], 1.0 / len(ours)) for r in ours]
        terms += [(*_counts(r["model_metrics"]), [K], -1.0 / len(theirs)) for r in theirs]
        spec = ours[0].get("spec", {})
        try:
            (rec["versus CI"],) = bootstrap_pass_at_k_combination(
                terms, resamples=int(spec.get("resamples", 1000)), seed=int(spec.get("seed", 0))
            )
        except ValueError as e:
            notes.append(f"{rec['setting']}: no interval versus {ref} ({e})")


def _panel_rank(panels: dict[str, list[str]], method: str | None, cs: list[dict]) -> tuple[int, int]:
    value = cs[0]["settings"].get(method)
    for i, members in enumerate(panels.values()):
        if value in members:
            return i, members.index(value)
    return len(panels), 0


def write_sweep_report(sweep_dir: str | Path) -> dict[str, Path]:
    """report.md, report.csv, pass_at_k_all.png and dse_bars.png over a sweep's finished cells
    (and pass_at_k_panels.png where the sweep file has report.panels).

    Every pass@k and dSE is in points (percent) in all of them. Seeds of a setting are aggregated as
    mean ± sd (one seed: the value alone); k* is each seed's integer. Intervals (the dSE column's,
    the bars' and the curves' bands) are the two-level bootstrap of the seed mean over the eval's
    problems (`bootstrap_pass_at_k_combination`): the eval's noise; the sd is the seeds' spread.
    """
    import csv

    from .metrics import interval_name

    sweep_dir = Path(sweep_dir)
    cells = _finished_cells(sweep_dir)
    method, panels, versus = sweep_panels(sweep_dir)
    groups, family = _setting_groups(cells, method, panels)
    notes: list[str] = []
    Ks = {
        key: (cs[0]["result"]["comparison"]["K"] if "comparison" in cs[0]["result"] else None)
        for key, cs in groups.items()
    }
    table = [_group_stats(cs, Ks[key], notes, key) for key, cs in groups.items()]
    known = {K for K in Ks.values() if K}
    kname = str(next(iter(known))) if len(known) == 1 else "K"  # the number in headers when every setting shares it
    ref = f"{method}={versus}" if versus else None
    if ref:
        _versus(table, groups, ref, int(kname) if kname.isdigit() else None, notes)
    md, csv_rows = _report_table(table, kname, family, versus)
    md = [
        "# Sweep report",
        "",
        f"{len(cells)} finished cells in {sweep_dir}. pass@k and dSE in points (percent); settings with several "
        "seeds: mean ± sd over seeds, one seed: its value.",
        f"dSE = pass@{kname}(base) - pass@1(model)"
        + ("" if known else " (no comparison with a base)")
        + f"; its interval: {interval_name()} of the seed mean (the eval's noise; the sd is the seeds' spread).",
        "",
        *_base_line(cells, kname),
        *md,
        "",
        "k* = the smallest k (any k from 1 to n) where the base matches or beats the model, per seed; "
        "gained / lost = problems solvable by the model only / by the base only; "
        f"pass@{kname} - base: the seed mean's pass@{kname} minus the base's, its interval paired over problems "
        "like dSE's (above 0: the method keeps more than the base solves at that k)"
        + (f"; pass@{kname} - {versus}: the same against {versus}'s seed mean." if versus else "."),
    ]
    if not all(rec["wall_exact"] for rec in table):
        md.append(
            "* no sessions.jsonl (a cell run before sessions were logged, or by hand): its training steps' time "
            "plus its last eval's, a lower bound."
        )
    md += [f"> note: {n}" for n in notes]
    md += [
        f"Plots: pass_at_k_all.png (bands: {interval_name()} of the seed mean), dse_bars.png (error bars: the same)"
        + (", pass_at_k_panels.png (one panel per family, the base in each)." if family else "."),
        "",
    ]
    out = {"md": sweep_dir / "report.md", "csv": sweep_dir / "report.csv"}
    out["md"].write_text("\n".join(md))
    fields = list(dict.fromkeys(k for row in csv_rows for k in row))
    with open(out["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(csv_rows)
    return out | _report_plots(sweep_dir, cells, table, kname, family, method, panels)


def _base_line(cells: list[dict], kname: str) -> list[str]:
    """The base's pass@1 and pass@K with their intervals, one line before the table (every cell
    compares with the same base samples where they share the base and eval settings)."""
    bases = {
        json.dumps(c["result"]["base_metrics"].get("pass_at_k"), sort_keys=True)
        for c in cells
        if "base_metrics" in c["result"]
    }
    first = next((c["result"]["base_metrics"] for c in cells if "base_metrics" in c["result"]), None)
    if first is None or len(bases) != 1 or not kname.isdigit():
        return []
    parts = []
    for k in (1, int(kname)):
        m = _get(first, k)
        if m is not None:
            parts.append(f"pass@{k} {100 * m['mean']:.1f} [{100 * m['lo']:.1f}, {100 * m['hi']:.1f}]")
    return [f"The base (every cell's comparison): {', '.join(parts)}.", ""] if parts else []


def _finished_cells(sweep_dir: Path) -> list[dict[str, Any]]:
    """`gather_cells`, or a ConfigError saying what the directory is instead."""
    from rlvr.errors import ConfigError

    if not sweep_dir.is_dir():
        what = "not a directory" if sweep_dir.exists() else "no such directory"
        raise ConfigError(f"{sweep_dir}: {what} (rlvr report takes a sweep's output_dir)")
    cells = gather_cells(sweep_dir)
    if not cells:
        hint = (
            "; it holds one eval (metrics.json): its report is summary.md beside it"
            if (sweep_dir / "metrics.json").is_file() or (sweep_dir / "eval" / "metrics.json").is_file()
            else ""
        )
        raise ConfigError(
            f"{sweep_dir}: not a sweep directory: no finished cell (a sub-directory with cell.json and "
            f"eval/metrics.json); give the output_dir of `rlvr sweep`{hint}"
        )
    return cells


def _setting_groups(
    cells: list[dict], method: str | None, panels: dict[str, list[str]]
) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """The cells grouped by setting (every axis but the seed), in the panels' order where the sweep
    has report.panels (`sweep_panels`); each setting's family."""
    groups: dict[str, list[dict]] = {}
    for c in cells:
        key = ", ".join(f"{k}={v}" for k, v in c["settings"].items() if k != "seed") or "default"
        groups.setdefault(key, []).append(c)
    family = {}  # setting -> its family (report.panels), the table in the panels' order
    for fam, members in panels.items():
        for member in members:
            for key, cs in groups.items():
                if cs[0]["settings"].get(method) == member:
                    family.setdefault(key, fam)
    if family:
        groups = dict(sorted(groups.items(), key=lambda kv: _panel_rank(panels, method, kv[1])))
    return groups, family


def _report_table(
    table: list[dict], kname: str, family: dict[str, str], versus: str | None = None
) -> tuple[list[str], list[dict]]:
    """report.md's table lines and report.csv's rows (a column versus report.versus where it is set)."""

    def mean_sd(name, rec, points):
        v, sd = rec[name]
        return _fmt(v, sd, points)

    cols = [
        ("pass@1", "pass@1", True),
        ("pass@K", f"pass@{kname}", True),
        ("base pass@K", f"base pass@{kname}", True),
        ("dSE", "dSE", True),
    ]
    counts_cols = [("gained", "gained", False), ("lost", "lost", False)]
    md = [
        ("| family " if family else "")
        + "| setting | seeds | "
        + ("K | " if kname == "K" else "")
        + " | ".join(c[1] for c in cols)
        + f" | dSE CI | pass@{kname} - base [CI] | "
        + (f"pass@{kname} - {versus} [CI] | " if versus else "")
        + "k* | gained | lost | wall time (s) |",
        ("|---" if family else "")
        + "|---|---|"
        + ("---|" if kname == "K" else "")
        + "---|" * (len(cols) + 6 + bool(versus)),
    ]
    csv_rows = []
    for rec in table:
        ci = rec["dSE CI"]
        ci_txt = "n/a" if ci is None else f"[{100 * ci[1]:.1f}, {100 * ci[2]:.1f}]"
        d = rec["delta CI"]
        d_txt = "n/a" if d is None else f"{100 * d[0]:+.1f} [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}]"
        vs = rec.get("versus CI")
        v_txt = (
            ""
            if not versus
            else ("- | " if vs is None else f"{100 * vs[0]:+.1f} [{100 * vs[1]:+.1f}, {100 * vs[2]:+.1f}] | ")
        )
        wall = mean_sd("wall time (s)", rec, False) + ("" if rec["wall_exact"] else " *")
        md.append(
            (f"| {family.get(rec['setting'], '')} " if family else "")
            + f"| {rec['setting']} | {rec['seeds']} | "
            + (f"{rec['K']} | " if kname == "K" else "")
            + " | ".join(mean_sd(name, rec, p) for name, _, p in cols)
            + f" | {ci_txt} | {d_txt} | {v_txt}{_k_star_text(rec['k*']) or 'n/a'} | "
            + " | ".join(mean_sd(name, rec, p) for name, _, p in counts_cols)
            + f" | {wall} |"
        )
        row: dict[str, Any] = {"family": family.get(rec["setting"])} if family else {}
        row |= {"setting": rec["setting"], "seeds": rec["seeds"], "K": rec["K"]}
        units = [(name, head, " (points)" if p else "", 100 if p else 1) for name, head, p in [*cols, *counts_cols]]
        for name, head, unit, scale in [*units, ("wall time (s)", "wall time", " (s)", 1)]:
            v, sd = rec[name]  # the unit in every column's name
            row[head + unit] = None if v is None else round(scale * v, 4)
            row[head + " sd" + unit] = None if sd is None else round(scale * sd, 4)
        row["dSE CI lo (points)"] = None if ci is None else round(100 * ci[1], 4)
        row["dSE CI hi (points)"] = None if ci is None else round(100 * ci[2], 4)
        for i, end in ((0, ""), (1, " CI lo"), (2, " CI hi")):  # pass@K of the seed mean - the base's, paired
            row[f"pass@{kname} - base{end} (points)"] = None if d is None else round(100 * d[i], 4)
        if versus:  # pass@K of the seed mean - report.versus's, paired
            for i, end in ((0, ""), (1, " CI lo"), (2, " CI hi")):
                row[f"pass@{kname} - {versus}{end} (points)"] = None if vs is None else round(100 * vs[i], 4)
        band = rec["curve"].get(int(rec["K"])) if rec["K"] else None  # the pass@K band of the seed mean
        row[f"pass@{kname} CI lo (points)"] = round(100 * band[1], 4) if isinstance(band, tuple) else None
        row[f"pass@{kname} CI hi (points)"] = round(100 * band[2], 4) if isinstance(band, tuple) else None
        row["k*"] = _k_star_text(rec["k*"])
        row["wall time exact"] = rec["wall_exact"]
        csv_rows.append(row)
    return md, csv_rows


def _report_plots(
    sweep_dir: Path, cells: list[dict], table: list[dict], kname: str, family: dict, method: Any, panels: dict
) -> dict[str, Path]:
    """pass_at_k_all.png (the base and every setting), dse_bars.png, and pass_at_k_panels.png with panels."""
    from .metrics import bootstrap_pass_at_k, interval_name
    from .plots import plot_dse_bars

    interval = interval_name()
    out: dict[str, Path] = {}
    curves: dict[str, Any] = {}
    first = next((c["result"] for c in cells if "base_metrics" in c["result"]), None)
    if first is not None:
        bks = sorted(int(k) for k in first["base_metrics"]["pass_at_k"])
        spec = first.get("spec", {})
        bcounts = _counts(first["base_metrics"])
        curves["base"] = (
            bootstrap_pass_at_k(
                *bcounts, bks, resamples=int(spec.get("resamples", 1000)), seed=int(spec.get("seed", 0))
            )
            if bcounts
            else {k: _get(first["base_metrics"], k)["mean"] for k in bks}
        )
    curves |= {rec["setting"]: rec["curve"] for rec in table}
    out["pass_at_k"] = plot_pass_at_k(
        curves,
        sweep_dir / "pass_at_k_all.png",
        base_label="base",
        title=f"pass@k, each setting's seed mean\nbands: {interval}",
    )
    if family:
        by_family: dict[str, dict[str, Any]] = {fam: {} for fam in panels}
        for rec in table:
            if rec["setting"] in family:
                short = rec["setting"].removeprefix(f"{method}=")  # the member's name alone when it is the only axis
                by_family[family[rec["setting"]]][short] = rec["curve"]
        out["panels"] = plot_pass_at_k_panels(
            {fam: cs for fam, cs in by_family.items() if cs},
            sweep_dir / "pass_at_k_panels.png",
            base=curves.get("base"),
            title=f"pass@k, each method's seed mean; dashed: the base\nbands: {interval}",
        )
    bars = {rec["setting"]: (rec["dSE"][0], *rec["dSE CI"][1:]) if rec["dSE CI"] else rec["dSE"][0] for rec in table}
    bars = {k: v for k, v in bars.items() if v is not None and (not isinstance(v, tuple) or v[0] is not None)}
    if bars:
        out["dse"] = plot_dse_bars(bars, sweep_dir / "dse_bars.png", K=kname, interval=interval)
    return out
