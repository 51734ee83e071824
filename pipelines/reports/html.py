"""The run report as one self-contained HTML page: tables and matplotlib plots (PNG,
base64-embedded), drawn only from the figures `report_data.compute_report` returns.

Self-contained on purpose: a report is mailed, attached to tickets and opened on
machines without access to the cluster or the internet, so it references no file,
script, font or stylesheet outside itself.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Callable, Optional

import matplotlib

matplotlib.use("Agg")  # no display on a cluster node or in CI; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

PALETTE = ["#2f6db3", "#e07b39", "#3a9e5c", "#b3404a", "#7b5ea7", "#8c6d31", "#d16fb5", "#5f6b7a"]

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.headline { font-size: 1.1em; background: #f3f6fa; padding: 0.8em 1em; border-left: 4px solid #2f6db3; }
.note { color: #555; font-size: 0.88em; }
img { max-width: 100%; }
"""


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


def _img(src: str, alt: str) -> str:
    return f'<img src="{src}" alt="{html.escape(alt)}">'


def _usd(v: Optional[float]) -> str:
    return "-" if v is None else f"${v:,.6f}" if abs(v) < 1 else f"${v:,.2f}"


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _saving(fraction: Optional[float]) -> str:
    """'saved 31.2%' or 'cost 72.0% more': a negative saving read as such."""
    if fraction is None:
        return "saving unknown"
    return f"saved {_pct(fraction)}" if fraction >= 0 else f"cost {_pct(-fraction)} more"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _colors(names: list[str]) -> dict[str, str]:
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def _mix_section(r: dict, colors: dict[str, str]) -> str:
    experts = r["experts"]
    names = list(experts)
    if not names:
        return "<h2>Expert mix</h2><p>No row reached an expert.</p>"

    def draw(ax):
        rows = [experts[n]["rows"] for n in names]
        bars = ax.barh(names, rows, color=[colors[n] for n in names])
        for bar, n in zip(bars, names):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {experts[n]['rows']} ({_pct(experts[n]['share_of_routed'])})", va="center")
        ax.set_xlabel("rows routed to the expert")
        ax.invert_yaxis()
        ax.set_xlim(0, max(rows) * 1.25)

    table = _table(
        ["expert", "rows", "share", "answered", "errors", "input tokens", "output tokens", "mean batch fill"],
        [[n, e["rows"], _pct(e["share_of_routed"]), e["answered"], e["errors"], e["input_tokens"], e["output_tokens"],
          "-" if e.get("mean_batch_fill") is None else f"{e['mean_batch_fill']:.2f}"] for n, e in experts.items()],
    )
    return "<h2>Expert mix</h2>" + _img(_png(draw, (9, 0.6 + 0.5 * len(names))), "rows per expert") + table


def _cost_section(r: dict, colors: dict[str, str]) -> str:
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
    if best["comparable"]:
        text = (
            f"<p>Best single expert: <b>{html.escape(best['expert'])}</b> ({html.escape(best['chosen_by'])}). "
            f"Running it on every routed row would have cost about <b>{_usd(best['estimated_total_usd'])}</b>; "
            f"the routed run cost {_usd(cost['total_usd'])} (routing {_saving(best.get('saving_fraction'))}).</p>"
            f"<p class='note'>Estimate: {html.escape(best['how_estimated'])}.</p>"
        )
    else:
        text = f"<p class='note'>{html.escape(best['note'])}.</p>"
    return "<h2>Cost</h2>" + _img(_png(draw, (9, 0.9 + 0.45 * (len(names) + 2))), "cost per expert and in total") + _table(
        ["", "cost", "per row"], rows
    ) + text


def _throughput_section(r: dict) -> str:
    t = r["throughput"]
    if not t.get("available"):
        return f"<h2>Throughput over time</h2><p class='note'>{html.escape(t.get('note', 'not available'))}</p>"

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
    note = (
        f"{t['answered_rows']} rows answered over {t['answering_seconds']:.2f} s, "
        f"{t['mean_rows_per_second_while_answering']:.1f} rows/s while answering"
        + (f"; the first answer came {startup:.1f} s after the run started (start-up: Ray, actors, models)" if startup is not None else "")
        + ". A row's time is when its expert finished the row's batch (answered_at), so rows arrive in batches."
    )
    return "<h2>Throughput over time</h2>" + _img(_png(draw), "rows answered per second over time") + f"<p class='note'>{html.escape(note)}</p>"


def _latency_section(r: dict, colors: dict[str, str]) -> str:
    experts = r["experts"]
    if not experts:
        return ""

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
        [n, f"{e['expert_seconds']['mean']:.4g}", f"{e['expert_seconds']['p50']:.4g}", f"{e['expert_seconds']['p90']:.4g}",
         f"{e['expert_seconds']['p99']:.4g}", f"{e['expert_seconds']['max']:.4g}", f"{e['expert_seconds']['total']:.4g}"]
        for n, e in experts.items()
    ]
    note = (
        "expert_seconds is a row's share of its batch's measured device time (shared by tokens), "
        "so it is what the row cost in compute, not the wait a caller saw."
    )
    return (
        "<h2>Per-expert latency</h2>"
        + _img(_png(draw), "distribution of expert seconds per row")
        + _table(["expert", "mean s", "p50 s", "p90 s", "p99 s", "max s", "total s"], rows)
        + f"<p class='note'>{html.escape(note)}</p>"
    )


def _errors_section(r: dict) -> str:
    errors = r["errors_by_kind"]
    if not errors:
        return "<h2>Errors by kind</h2><p>No row has an error.</p>"

    def draw(ax):
        kinds = list(errors)
        ax.barh(kinds, [errors[k] for k in kinds], color="#b3404a")
        ax.invert_yaxis()
        ax.set_xlabel("rows")

    return "<h2>Errors by kind</h2>" + _img(_png(draw, (9, 0.8 + 0.45 * len(errors))), "rows with errors by kind") + _table(
        ["kind", "rows"], [[k, n] for k, n in errors.items()]
    )


def _quality_section(r: dict, colors: dict[str, str]) -> str:
    q = r["quality"]
    if q is None:
        return "<h2>Quality</h2><p class='note'>No gold answers given (--gold SQUAD_JSON): no F1, no frontier.</p>"
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
    source = (
        f"Single-expert points: every expert on the same {fr['points'][0]['questions']} profiled questions ({html.escape(fr.get('profile', ''))})."
        if fr["source"] == "profile" and fr["points"]
        else html.escape(fr.get("note") or "")
    )
    mixed = fr.get("hull_f1_at_run_cost")
    mix_note = (
        f" At this run's cost, sending each question at random to one of the two neighbouring frontier experts would score F1 {100 * mixed:.2f} on average."
        if mixed is not None else ""
    )
    missing = f" {q['gold_questions_not_in_run']} gold question(s) are not in this run and were not scored." if q["gold_questions_not_in_run"] else ""
    return (
        "<h2>Quality and the cost/F1 frontier</h2>"
        + _table(["", "scored", "EM", "F1"], rows)
        + f"<p class='note'>Official SQuAD EM/F1 against {html.escape(q['gold'])}; a row with an error counts as an empty answer.{html.escape(missing)}</p>"
        + _img(_png(draw, (9, 4.5)), "cost per row against F1")
        + f"<p class='note'>{source} The star is this run: its mean cost per routed row and its F1.{mix_note}</p>"
    )


def headline(r: dict) -> str:
    """One sentence: quality and cost of the run against its best single expert."""
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
    title = f"routebatch run {r.get('run_id') or ''}".strip()
    meta = f"{html.escape(r['run_dir'])} · status: {html.escape(str(r['status']))} · generated {html.escape(r['generated_at'])}"
    if r.get("wall_seconds") is not None:
        meta += f" · wall {r['wall_seconds']:.1f} s"
    body = "".join(
        [
            f"<h1>{html.escape(title)}</h1><p class='note'>{meta}</p>",
            f"<p class='headline'>{html.escape(headline(r))}</p>",
            _mix_section(r, colors),
            _cost_section(r, colors),
            _quality_section(r, colors),
            _throughput_section(r),
            _latency_section(r, colors),
            _errors_section(r),
            "<p class='note'>All figures are also in report.json beside this page.</p>",
        ]
    )
    return f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}</style></head><body>{body}</body></html>"
