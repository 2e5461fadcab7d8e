"""Pictures of a latency profile (`bevstream profile`): where each tick's time goes, tick after tick
(stacked critical-path pieces), the end-to-end histogram against its budget, and accuracy against
latency for a table of model profiles x compute budgets (issue 26 item 3 builds that table).

Drawn with matplotlib's object API on an Agg canvas (no global backend state, no display needed).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from runtime.profiling.budgets import CHAIN, critical_path, end_to_end_ms
from schema.results import DropRecord, TickResult

PIECES = ("before ingest",) + CHAIN + ("waiting",)
COLOURS = {"before ingest": "#bbbbbb", "ingest": "#4e79a7", "submit": "#f28e2b", "backbone": "#59a14f",
           "bev": "#e15759", "deliver": "#b07aa1", "waiting": "#edc948"}


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=80)
    return path


def stage_stack_png(records: Iterable[TickResult | DropRecord], live: bool, path: Path, budget_ms: float | None = None,
                    title: str = "") -> Path:
    """Stacked bars over the ticks: each tick's wall time cut into its critical-path pieces (budgets.critical_path),
    with the end-to-end budget as a line."""
    records = list(records)
    ticks = [r for r in records if isinstance(r, TickResult) and r.timings]
    pieces = [critical_path(r, live) for r in ticks]
    x = np.array([r.frame_id for r in ticks])
    fig = Figure(figsize=(8, 3.6))
    ax = fig.add_subplot()
    bottom = np.zeros(len(ticks))
    for name in PIECES:
        h = np.array([p[name] for p in pieces])  # (T,) ms
        if h.any():
            ax.bar(x, h, bottom=bottom, width=0.9, color=COLOURS[name], label=name, linewidth=0)
            bottom += h
    if budget_ms is not None:
        ax.axhline(budget_ms, color="black", linestyle="--", linewidth=1, label=f"budget {budget_ms:.1f} ms")
    drops = [r.frame_id for r in records if isinstance(r, DropRecord)]
    if drops:
        ax.scatter(drops, np.zeros(len(drops)), marker="x", color="#e15759", clip_on=False, zorder=3, label="dropped")
    ax.set_xlabel("frame id")
    ax.set_ylabel("ms (from the oldest exposure)" if live else "ms (from the set's load)")
    ax.set_title(title or "where each tick's time goes")
    ax.legend(fontsize=7, ncol=4, loc="upper left")
    ax.set_ylim(0, max(bottom.max(initial=0), budget_ms or 0) * 1.3 + 1)
    fig.tight_layout()
    return _save(fig, path)


def end_to_end_png(records: Iterable[TickResult | DropRecord], live: bool, path: Path, budget_ms: float,
                   title: str = "") -> Path:
    """Histogram of end-to-end latency (replay: work latency) with the budget line and the share over it."""
    values = np.array([end_to_end_ms(r, live) for r in records if isinstance(r, TickResult) and r.timings])  # (T,)
    fig = Figure(figsize=(5, 3.4))
    ax = fig.add_subplot()
    ax.hist(values, bins=min(30, max(5, len(values) // 2)), color="#4e79a7")
    over = float((values > budget_ms).mean() * 100) if len(values) else 0.0
    ax.axvline(budget_ms, color="#e15759", linewidth=2, label=f"budget {budget_ms:g} ms: {over:.0f} % over")
    if len(values):
        ax.axvline(float(np.median(values)), color="black", linestyle=":", label=f"median {np.median(values):.1f} ms")
    ax.set_xlabel("end-to-end latency, ms" if live else "latency (load + submit to result), ms")
    ax.set_ylabel("ticks")
    ax.set_title(title or "end to end")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def accuracy_latency_png(rows: Sequence[dict], path: Path, budget_ms: float | None = None) -> Path:
    """Accuracy against latency for a profile x compute-budget table: one point per row, each with keys
    'label', 'latency_ms' and one or both of 'nds_offline', 'nds_streaming' (the NDS scored offline and
    as streamed); the two points of a row are joined, so the cost of streaming is the segment."""
    if not rows:
        raise ValueError("accuracy_latency_png: an empty table")
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    for key, marker in (("nds_offline", "o"), ("nds_streaming", "s")):
        pts = [(r["latency_ms"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, label=key.replace("nds_", "NDS "), zorder=3)
    placed: list[tuple[float, float]] = []
    for r in rows:
        if r.get("nds_offline") is not None and r.get("nds_streaming") is not None:
            ax.plot([r["latency_ms"]] * 2, [r["nds_offline"], r["nds_streaming"]], color="grey", linewidth=1)
        y = r["nds_streaming"] if r.get("nds_streaming") is not None else r["nds_offline"]
        near = sum(abs(x - r["latency_ms"]) < 3 and abs(v - y) < 0.02 for x, v in placed)  # rows at one spot: stack
        placed.append((r["latency_ms"], y))
        ax.annotate(r["label"], (r["latency_ms"], y), fontsize=7, xytext=(4, 4 - 9 * near), textcoords="offset points")
    if budget_ms is not None:
        ax.axvline(budget_ms, color="#e15759", linestyle="--", label=f"budget {budget_ms:.1f} ms")
    ax.set_xlabel("latency, ms")
    ax.set_ylabel("NDS")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def profile_pngs(records: Sequence[TickResult | DropRecord], live: bool, out_dir: Path, deadline_ms: float,
                 label: str = "") -> list[Path]:
    """The profile's pictures in out_dir: stages.png and end_to_end.png (prefixed by label, if any)."""
    prefix = f"{label}_" if label else ""
    return [stage_stack_png(records, live, out_dir / f"{prefix}stages.png", deadline_ms, title=label),
            end_to_end_png(records, live, out_dir / f"{prefix}end_to_end.png", deadline_ms, title=label)]
