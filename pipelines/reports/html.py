"""The run report as one self-contained HTML page: tables and matplotlib plots (PNG,
base64-embedded), drawn only from the figures `pipelines.reports.data.compute_report`
returns.

The page itself is one Jinja2 template (templates/report.html.j2) rendered with
autoescape on: this module only turns the figures into plain values (numbers formatted,
plots drawn), so no value -- an expert name, a path, an error kind -- can become markup,
and there is no hand-placed escaping to forget (docs/library-decisions.md).

Self-contained on purpose: a report is mailed, attached to tickets and opened on
machines without access to the cluster or the internet, so it references no file,
script, font or stylesheet outside itself.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Callable, Optional

import matplotlib

matplotlib.use("Agg")  # no display on a cluster node or in CI; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from jinja2 import Environment, FileSystemLoader, StrictUndefined  # noqa: E402

PALETTE = ["#2f6db3", "#e07b39", "#3a9e5c", "#b3404a", "#7b5ea7", "#8c6d31", "#d16fb5", "#5f6b7a"]

# autoescape=True, not select_autoescape(["html"]): that matches file names ending in
# .html, and the template's ends in .html.j2.
_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _png(draw: Callable[[Any], None], size: tuple[float, float] = (9.0, 3.6)) -> str:
    fig, ax = plt.subplots(figsize=size, dpi=100)
    try:
        draw(ax)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plot(draw: Callable[[Any], None], alt: str, size: tuple[float, float] = (9.0, 3.6)) -> dict[str, str]:
    return {"src": _png(draw, size), "alt": alt}


def _usd(v: Optional[float]) -> str:
    return "-" if v is None else f"${v:,.6f}" if abs(v) < 1 else f"${v:,.2f}"


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _saving(fraction: Optional[float]) -> str:
    """'saved 31.2%' or 'cost 72.0% more': a negative saving read as such."""
    if fraction is None:
        return "saving unknown"
    return f"saved {_pct(fraction)}" if fraction >= 0 else f"cost {_pct(-fraction)} more"


def _colors(names: list[str]) -> dict[str, str]:
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def _mix(r: dict, colors: dict[str, str]) -> Optional[dict]:
    experts = r["experts"]
    names = list(experts)
    if not names:
        return None

    def draw(ax):
        rows = [experts[n]["rows"] for n in names]
        bars = ax.barh(names, rows, color=[colors[n] for n in names])
        for bar, n in zip(bars, names):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {experts[n]['rows']} ({_pct(experts[n]['share_of_routed'])})", va="center")
        ax.set_xlabel("rows routed to the expert")
        ax.invert_yaxis()
        ax.set_xlim(0, max(rows) * 1.25)

    rows = [[n, e["rows"], _pct(e["share_of_routed"]), e["answered"], e["errors"], e["input_tokens"], e["output_tokens"],
             "-" if e.get("mean_batch_fill") is None else f"{e['mean_batch_fill']:.2f}"] for n, e in experts.items()]
    return {"plot": _plot(draw, "rows per expert", (9, 0.6 + 0.5 * len(names))), "rows": rows}


def _cost(r: dict, colors: dict[str, str]) -> dict:
    experts, cost = r["experts"], r["cost"]
    best = cost["best_single"]
    names = list(experts)

    def draw(ax):
        labels = [*names, "routed run (total)"]
        values = [experts[n]["cost_usd"] for n in names] + [cost["total_usd"]]
        shades = [colors[n] for n in names] + ["#222222"]
        if best["comparable"]:
            labels.append(f"{best['expert']} on everything (est.)")
            values.append(best["estimated_total_usd"])
            shades.append("#bbbbbb")
        ax.barh(labels, values, color=shades)
        for i, v in enumerate(values):
            ax.text(v, i, " " + _usd(v), va="center")
        ax.invert_yaxis()
        ax.set_xlabel("USD")
        ax.set_xlim(0, max(values + [1e-12]) * 1.3)

    rows = [[n, _usd(e["cost_usd"]), _usd(e["mean_cost_per_row_usd"])] for n, e in experts.items()]
    rows.append(["total (routed run)", _usd(cost["total_usd"]), _usd(cost["per_routed_row_usd"])])
    comparable = {
        "expert": best["expert"], "chosen_by": best["chosen_by"], "estimated_total": _usd(best["estimated_total_usd"]),
        "saving": _saving(best.get("saving_fraction")), "how_estimated": best["how_estimated"],
    } if best["comparable"] else None
    return {
        "plot": _plot(draw, "cost per expert and in total", (9, 0.9 + 0.45 * (len(names) + 2))),
        "rows": rows,
        "total": _usd(cost["total_usd"]),
        "best": comparable,
        "note": None if best["comparable"] else best["note"],
    }


def _throughput(r: dict) -> dict:
    t = r["throughput"]
    if not t.get("available"):
        return {"plot": None, "note": t.get("note", "not available")}

    def draw(ax):
        width = t["bin_seconds"]
        ax.bar(t["bin_starts_s"], t["rows_per_second"], width=width, align="edge", color="#2f6db3", alpha=0.8, label="rows/s")
        ax.set_xlabel("seconds since the first answer")
        ax.set_ylabel("rows answered per second")
        cum = ax.twinx()
        total, xs, ys = 0, [], []
        for start, n in zip(t["bin_starts_s"], t["rows_per_bin"]):
            total += n
            xs.append(start + width)
            ys.append(total)
        cum.plot(xs, ys, color="#e07b39", label="rows answered (cumulative)")
        cum.set_ylabel("rows answered (cumulative)")
        cum.set_ylim(0, max(ys) * 1.05 if ys else 1)

    startup = t.get("first_answer_after_start_s")
    return {
        "plot": _plot(draw, "rows answered per second over time"),
        "answered_rows": t["answered_rows"],
        "answering_seconds": f"{t['answering_seconds']:.2f}",
        "rows_per_second": f"{t['mean_rows_per_second_while_answering']:.1f}",
        "startup": None if startup is None else f"{startup:.1f}",
    }


def _latency(r: dict, colors: dict[str, str]) -> Optional[dict]:
    experts = r["experts"]
    if not experts:
        return None

    def draw(ax):
        for n, e in experts.items():
            h = e["expert_seconds_histogram"]
            if h["counts"]:
                ax.stairs(h["counts"], h["edges"], label=n, color=colors[n], linewidth=1.8)
        ax.set_xscale("log")
        ax.set_xlabel("expert seconds per row (log scale)")
        ax.set_ylabel("rows")
        ax.legend(fontsize=8)

    rows = [
        [n, *(f"{e['expert_seconds'][k]:.4g}" for k in ("mean", "p50", "p90", "p99", "max", "total"))]
        for n, e in experts.items()
    ]
    return {"plot": _plot(draw, "distribution of expert seconds per row"), "rows": rows}


def _errors(r: dict) -> Optional[dict]:
    errors = r["errors_by_kind"]
    if not errors:
        return None

    def draw(ax):
        kinds = list(errors)
        ax.barh(kinds, [errors[k] for k in kinds], color="#b3404a")
        ax.invert_yaxis()
        ax.set_xlabel("rows")

    return {"plot": _plot(draw, "rows with errors by kind", (9, 0.8 + 0.45 * len(errors))), "rows": [[k, n] for k, n in errors.items()]}


def _quality(r: dict, colors: dict[str, str]) -> Optional[dict]:
    q = r["quality"]
    if q is None:
        return None
    fr = q["frontier"]

    def draw(ax):
        pts = fr["points"]
        for p in pts:
            ax.scatter(p["cost_per_row_usd"], 100 * p["f1"], color=colors.get(p["expert"], "#5f6b7a"), s=40, zorder=3)
            ax.annotate(p["expert"], (p["cost_per_row_usd"], 100 * p["f1"]), textcoords="offset points", xytext=(5, -10), fontsize=8)
        hull = [next(p for p in pts if p["expert"] == n) for n in fr["hull"]]
        if len(hull) > 1:
            ax.plot([p["cost_per_row_usd"] for p in hull], [100 * p["f1"] for p in hull], color="#888888", linestyle="--", label="single-expert frontier")
        run = fr["run_point"]
        ax.scatter(run["cost_per_row_usd"], 100 * run["f1"], marker="*", s=260, color="#222222", zorder=4, label="this run")
        ax.set_xlabel("USD per row")
        ax.set_ylabel("F1 (%)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a point
        ax.margins(x=0.15, y=0.15)

    rows = [["this run (all scored rows)", q["scored"], f"{100 * q['em']:.2f}", f"{100 * q['f1']:.2f}"]]
    rows += [[f"  routed to {n}", v["scored"], f"{100 * v['em']:.2f}", f"{100 * v['f1']:.2f}"] for n, v in q["per_expert"].items()]
    from_profile = fr["source"] == "profile" and fr["points"]
    mixed = fr.get("hull_f1_at_run_cost")
    return {
        "rows": rows,
        "gold": q["gold"],
        "not_in_run": q["gold_questions_not_in_run"] or None,
        "plot": _plot(draw, "cost per row against F1", (9, 4.5)),
        "profile_questions": fr["points"][0]["questions"] if from_profile else None,
        "profile": fr.get("profile", ""),
        "frontier_note": fr.get("note") or "",
        "mixed_f1": None if mixed is None else f"{100 * mixed:.2f}",
    }


def headline_sentence(r: dict) -> str:
    """One sentence of plain text: quality and cost of the run against its best single
    expert (the page's headline, and what `routebatch report` prints)."""
    cost, q = r["cost"], r["quality"]
    best = cost["best_single"]
    parts = [f"{r['rows']['total']} rows, {r['rows']['answered']} answered, total cost {_usd(cost['total_usd'])}"]
    if q is not None:
        parts.append(f"F1 {100 * q['f1']:.2f}")
    if best["comparable"]:
        parts.append(
            f"best single expert {best['expert']}: est. {_usd(best['estimated_total_usd'])}, F1 {100 * best['f1']:.2f}"
            f" (routing {_saving(best.get('saving_fraction'))})"
        )
    else:
        parts.append(best["note"])
    return "; ".join(parts)


def render_html(r: dict) -> str:
    colors = _colors(sorted(set(r["experts"]) | {p["expert"] for p in ((r.get("quality") or {}).get("frontier", {}).get("points", []))}))
    return _TEMPLATES.get_template("report.html.j2").render(
        title=f"routebatch run {r.get('run_id') or ''}".strip(),
        run_dir=r["run_dir"],
        status=str(r["status"]),
        generated_at=r["generated_at"],
        wall_seconds=None if r.get("wall_seconds") is None else f"{r['wall_seconds']:.1f}",
        headline=headline_sentence(r),
        mix=_mix(r, colors),
        cost=_cost(r, colors),
        quality=_quality(r, colors),
        throughput=_throughput(r),
        latency=_latency(r, colors),
        errors=_errors(r),
    )
