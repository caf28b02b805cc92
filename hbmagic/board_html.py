"""The static forms of the board: HTML for front-ends without the widget, text for a terminal or a log.

Both are drawn from the board's JSON state (``Board.state``), the same data
the widget shows live. The HTML has inline styles only (no script, no style
sheet), using JupyterLab's theme variables with plain fallbacks, so a saved
notebook, nbconvert's HTML and a notebook viewer all show the board.
"""

from __future__ import annotations

import html
import math
from typing import Any

__all__ = ["VIRIDIS", "metric_color", "render_html", "render_text"]

# Viridis, 9 stops: dark (worst) to yellow (best); readable on light and dark backgrounds.
VIRIDIS = (
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
)
TITLES_UP_TO = 1500  # cells with a hover title in the static HTML (beyond that the page gets heavy)
CELLS_UP_TO = 2500  # cells drawn one by one; a bigger board shows each rung as one bar of its states
FINAL = ("done", "promoted", "stopped", "failed", "skipped")


def metric_color(t: float) -> str:
    """The color of ``t`` in [0, 1] (1 is best) on the shared scale."""
    t = min(1.0, max(0.0, t)) * (len(VIRIDIS) - 1)
    i = min(int(t), len(VIRIDIS) - 2)
    f = t - i
    a, b = VIRIDIS[i], VIRIDIS[i + 1]
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b, strict=True))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return float(value)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value) if isinstance(value, str) else str(value)


def _amount(value: float | None) -> str:
    if value is None:
        return "?"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.4g}"


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


class _Scale:
    """The shared color scale: the metric's finite values over every evaluated cell, best mapped to 1."""

    def __init__(self, cells: dict[str, dict[str, Any]], mode: str):
        values = [v for c in cells.values() if (v := _number(c.get("v"))) is not None and math.isfinite(v)]
        self.low = min(values) if values else 0.0
        self.high = max(values) if values else 1.0
        self.mode = mode

    def color(self, value: Any) -> str:
        v = _number(value)
        if v is None or not math.isfinite(v):
            return metric_color(0.0)
        span = self.high - self.low
        t = 0.5 if span <= 0 else (v - self.low) / span
        return metric_color(1.0 - t if self.mode == "min" else t)


def _rows(state: dict[str, Any]) -> list[tuple[dict[str, Any], list[list[tuple[str, dict[str, Any] | None]]]]]:
    """Each row with its rungs' cells: (key, stored cell or None for a planned, untouched one)."""
    cells = state.get("cells", {})
    counts: dict[tuple[str, int], int] = {}
    for key in cells:
        iteration, s, rung, index = key.split(":")
        row = f"{iteration}:{s}"
        counts[(row, int(rung))] = max(counts.get((row, int(rung)), 0), int(index) + 1)
    out = []
    for row in state.get("plan", {}).get("rows", []):
        rungs = []
        for r, rung in enumerate(row["rungs"]):
            n = rung["n"] if rung["n"] is not None else 0
            n = max(n, counts.get((row["key"], r), 0))
            rungs.append([(f"{row['key']}:{r}:{i}", cells.get(f"{row['key']}:{r}:{i}")) for i in range(n)])
        out.append((row, rungs))
    return out


def _hover(key: str, cell: dict[str, Any] | None, state: dict[str, Any], budget: Any) -> str:
    metric = state.get("summary", {}).get("metric") or state.get("info", {}).get("metric") or "value"
    if cell is None or cell.get("t") is None:
        return f"queued · budget {_amount(budget)}"
    trial = state.get("trials", {}).get(str(cell["t"]), {})
    parts = [f"trial {cell['t']} · {cell['s']} · budget {_amount(budget)}"]
    if cell.get("v") is not None:
        parts.append(f"{metric}={_short(_number(cell['v']))}")
    rank = cell.get("r")
    if cell["s"] == "stopped" and rank:
        cutoff = "nothing promoted" if rank[2] is None else f"cutoff {_short(_number(rank[2]))}"
        parts.append(f"stopped: rank {rank[0]} of {rank[1]} ({cutoff})")
    elif cell["s"] == "promoted" and rank:
        parts.append(f"promoted: rank {rank[0]}")
    if cell.get("e"):
        parts.append("error: " + cell["e"].strip().splitlines()[-1])
    config = trial.get("c", {})
    if config:
        parts.append(", ".join(f"{k}={_short(v)}" for k, v in config.items()))
    return " · ".join(parts)


_BASE = "display:inline-block;width:9px;height:9px;box-sizing:border-box;margin:0 1px 1px 0;border-radius:1px;"


def _state(cell: dict[str, Any] | None, ended_complete: bool) -> str:
    if cell is None:
        return "skipped" if ended_complete else "queued"
    return cell["s"]


def _cell_style(cell: dict[str, Any] | None, scale: _Scale, ended_complete: bool) -> str:
    state = _state(cell, ended_complete)
    if state == "queued":
        return _BASE + "border:1px solid var(--jp-border-color1,#bbb)"
    if state == "skipped":
        return _BASE + "border:1px dashed var(--jp-border-color2,#ddd)"
    if state == "running":
        return _BASE + "background:var(--jp-brand-color2,#90caf9);border:2px solid var(--jp-brand-color1,#1976d2)"
    if state == "failed":
        return _BASE + "background:var(--jp-error-color1,#d32f2f)"
    color = scale.color(cell.get("v") if cell else None)
    if state == "stopped":
        return _BASE + f"background:{color};opacity:.35"
    if state == "promoted":
        return _BASE + f"background:{color};border:2px solid var(--jp-ui-font-color0,#111)"
    return _BASE + f"background:{color}"


_BAR_COLORS = {
    "done": metric_color(1.0),
    "promoted": "var(--jp-ui-font-color1,#444)",
    "stopped": "var(--jp-border-color1,#bbb)",
    "failed": "var(--jp-error-color1,#d32f2f)",
    "running": "var(--jp-brand-color1,#1976d2)",
    "skipped": "transparent",
    "queued": "transparent",
}


def _rung_bar(cells: list[tuple[str, dict[str, Any] | None]], complete: bool) -> str:
    """A rung as one bar: a segment per state, as wide as its share of the rung's cells."""
    counts: dict[str, int] = {}
    for _, cell in cells:
        state = _state(cell, complete)
        counts[state] = counts.get(state, 0) + 1
    title = ", ".join(f"{n} {state}" for state, n in counts.items())
    segments = "".join(
        f'<span style="width:{100 * n / len(cells):.2f}%;background:{_BAR_COLORS.get(state, "transparent")}"></span>'
        for state, n in counts.items()
    )
    return (
        f'<div title="{html.escape(title)}" style="display:flex;height:9px;'
        f'border:1px solid var(--jp-border-color2,#ddd)">{segments}</div>'
    )


def _weights(rows: list[tuple[dict[str, Any], list[list[Any]]]]) -> list[float]:
    width = max((len(rungs) for _, rungs in rows), default=0)
    most = [1] * width
    for _, rungs in rows:
        for i, cells in enumerate(rungs):
            most[i] = max(most[i], len(cells))
    return [math.sqrt(m) for m in most]


def render_html(state: dict[str, Any]) -> str:
    """The board as static HTML: header, summary, best configuration, one row per bracket, legend."""
    plan = state.get("plan") or {}
    esc = html.escape
    top = (
        '<div class="hbmagic-static" style="font-family:var(--jp-ui-font-family,sans-serif);font-size:12px;'
        'color:var(--jp-ui-font-color1,#222);max-width:100%;overflow-x:hidden;line-height:1.4">'
    )
    if not plan:
        return top + "hbmagic: waiting for the search to start…</div>"
    summary = state.get("summary", {})
    out = [top, f'<div style="font-weight:600">{esc(plan.get("title", ""))}</div>']
    out.append(f"<div>{esc(_status_line(state))}</div>")
    if summary.get("message"):
        out.append(f'<div style="white-space:pre-wrap">{esc(summary["message"])}</div>')
    out.append(f"<div>{esc(_best_line(state))}</div>")
    rows = _rows(state)
    weights = _weights(rows)
    width = sum(weights) or 1.0
    scale = _Scale(state.get("cells", {}), summary.get("mode", "min"))
    complete = summary.get("status") == "completed"
    total = sum(len(c) for _, rungs in rows for c in rungs)
    titles, compact = total <= TITLES_UP_TO, total > CELLS_UP_TO
    out.append('<table style="border-collapse:collapse;table-layout:fixed;width:100%;margin:4px 0;font-size:12px">')
    out.append('<colgroup><col style="width:56px">')
    out.extend(f'<col style="width:{100 * w / width:.2f}%">' for w in weights)
    out.append("</colgroup><tr>")
    out.append('<th style="text-align:left;font-weight:normal;opacity:.7">bracket</th>')
    out.extend(f'<th style="text-align:left;font-weight:normal;opacity:.7">rung {i}</th>' for i in range(len(weights)))
    out.append("</tr>")
    iterations = plan.get("iterations", 1) > 1 and plan.get("algorithm") != "asha"
    for row, rungs in rows:
        label = f"{row['iteration'] + 1}·s={row['s']}" if iterations else f"s={row['s']}"
        out.append(f'<tr><td style="vertical-align:top;padding:2px 4px 2px 0;white-space:nowrap">{esc(label)}</td>')
        for r, cells in enumerate(rungs):
            rung = row["rungs"][r]
            n = rung["n"]
            caption = f"{n} × {_amount(rung['budget'])}" if n is not None else f"r={_amount(rung['budget'])}"
            out.append(
                '<td style="vertical-align:top;padding:2px 6px 4px 0">'
                f'<div style="font-size:10px;opacity:.7">{esc(caption)}</div><div style="line-height:0">'
            )
            if compact:
                out.append(_rung_bar(cells, complete))
            else:
                for key, cell in cells:
                    title = f' title="{esc(_hover(key, cell, state, rung["budget"]))}"' if titles else ""
                    style = _cell_style(cell, scale, complete)
                    out.append(f'<span data-state="{_state(cell, complete)}" style="{style}"{title}></span>')
            out.append("</div></td>")
        out.extend("<td></td>" for _ in range(len(weights) - len(rungs)))
        out.append("</tr>")
    out.append("</table>")
    out.append(_legend(scale, summary))
    out.append("</div>")
    return "".join(out)


def _legend(scale: _Scale, summary: dict[str, Any]) -> str:
    swatch = '<span style="{}"></span> {} &nbsp; '
    parts = [
        swatch.format(_BASE + "border:1px solid var(--jp-border-color1,#bbb)", "queued"),
        swatch.format(_cell_style({"s": "running"}, scale, False), "running"),
        swatch.format(
            _cell_style({"s": "done", "v": scale.high if summary.get("mode") == "max" else scale.low}, scale, False),
            "done",
        ),
        swatch.format(_cell_style({"s": "promoted", "v": scale.low}, scale, False), "promoted"),
        swatch.format(_cell_style({"s": "stopped", "v": scale.low}, scale, False), "stopped"),
        swatch.format(_cell_style({"s": "failed"}, scale, False), "failed"),
    ]
    metric = html.escape(str(summary.get("metric") or "value"))
    worse, better = (scale.high, scale.low) if summary.get("mode", "min") == "min" else (scale.low, scale.high)
    gradient = ",".join(metric_color(i / 8) for i in range(9))
    parts.append(
        f'{metric}: {_short(worse)} <span style="display:inline-block;width:80px;height:8px;'
        f'background:linear-gradient(to right,{gradient})"></span> {_short(better)} (best)'
    )
    return f'<div style="font-size:11px;opacity:.85">{"".join(parts)}</div>'


def _status_line(state: dict[str, Any]) -> str:
    summary = state.get("summary", {})
    status = summary.get("status", "running")
    planned = summary.get("planned")
    evaluations = f"{summary.get('evaluations', 0):,}" + (f" / {planned:,}" if planned else "") + " evaluations"
    resource = f"{_amount(summary.get('resource', 0))}"
    if summary.get("resourcePlanned"):
        resource += f" / {_amount(summary['resourcePlanned'])}"
    parts = [status, evaluations, f"{resource} resource", f"{_duration(summary.get('elapsed'))} elapsed"]
    if status == "running" and summary.get("eta") is not None:
        parts.append(f"~{_duration(summary['eta'])} left")
    if summary.get("running"):
        parts.append(f"{summary['running']} running")
    if summary.get("failures"):
        parts.append(f"{summary['failures']} failed")
    return " · ".join(parts)


def _best_line(state: dict[str, Any]) -> str:
    summary = state.get("summary", {})
    best = summary.get("best")
    direction = "minimized" if summary.get("mode", "min") == "min" else "maximized"
    metric = summary.get("metric") or "value"
    if not best:
        return f"best ({direction} {metric}): none yet"
    config = ", ".join(f"{k}={_short(v)}" for k, v in best.get("config", {}).items())
    return (
        f"best ({direction} {metric}): {_short(best['value'])} "
        f"(trial {best['trial']}, budget {_amount(best['budget'])}): {config}"
    )


def render_text(state: dict[str, Any]) -> str:
    """A few lines: the plan, the counts, the best so far, and done/planned per rung of each bracket."""
    plan = state.get("plan") or {}
    if not plan:
        return "hbmagic: waiting for the search to start…"
    lines = [plan.get("title", ""), _status_line(state)]
    message = state.get("summary", {}).get("message")
    if message:
        lines.append(message)
    lines.append(_best_line(state))
    rows = _rows(state)
    if len(rows) <= 12:
        for row, rungs in rows:
            counts = []
            for cells in rungs:
                final = sum(1 for _, c in cells if c is not None and c["s"] in FINAL)
                running = any(c is not None and c["s"] == "running" for _, c in cells)
                counts.append(f"{final}/{len(cells)}{'*' if running else ''}".ljust(9))
            lines.append(f"  s={row['s']:<3}" + " ".join(counts).rstrip())
    return "\n".join(lines)
