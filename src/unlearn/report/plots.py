"""The reports' figures, as PNG bytes (matplotlib, imported only when a figure is drawn):
training curves and before/after bars for `unlearn eval`, the trade-off plot for `unlearn compare`.
Each returns None when it has nothing to draw."""

from __future__ import annotations

import io
import math
from typing import Any, Optional

from unlearn.report.format import axis_label

# train_log.jsonl fields that are bookkeeping, not terms worth a curve.
SKIP_LOG_KEYS = {"step", "lr", "tokens", "seconds", "skipped", "nonfinite", "eval", "grad_norm"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any, tight: bool) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, **({"bbox_inches": "tight"} if tight else {}))
    plt.close(fig)
    return buf.getvalue()


def training_curves_png(log: list[dict[str, Any]]) -> Optional[bytes]:
    """One panel per logged term (loss, each objective term, forget NLL, and the evaluations made
    during training), against the step. None when there is no log."""
    steps = [r for r in log if not r.get("skipped")]
    if not steps:
        return None
    keys = [k for k in steps[0] if k not in SKIP_LOG_KEYS and isinstance(steps[0][k], (int, float))]
    for r in steps:
        keys.extend(k for k in r if k not in keys and k not in SKIP_LOG_KEYS and isinstance(r[k], (int, float)))
    evals = [r for r in steps if isinstance(r.get("eval"), dict)]
    eval_keys = list(dict.fromkeys(k for r in evals for k in r["eval"] if k != "score"))
    panels = [(k, [(r["step"], r[k]) for r in steps if isinstance(r.get(k), (int, float))]) for k in keys]
    panels += [(f"eval: {k}", [(r["step"], r["eval"][k]) for r in evals if isinstance(r["eval"].get(k), (int, float))])
               for k in eval_keys]
    panels = [(k, pts) for k, pts in panels if pts]
    if not panels:
        return None
    plt = _pyplot()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, (name, pts) in zip(axes.flat, panels):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3,
                color="#3366aa" if not name.startswith("eval") else "#aa5522")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig, tight=True)


def before_after_png(metrics: dict[str, Any]) -> Optional[bytes]:
    """Grouped horizontal bars, original vs unlearned, for every metric on a 0-100 % scale."""
    bars = [
        (f"{role}: {name}", m["original"], m["unlearned"])
        for role, ms in metrics["metrics"].items()
        for name, m in ms.items()
        if m["unit"] == "fraction" and (m["original"] is not None or m["unlearned"] is not None)
    ]
    if not bars:
        return None
    plt = _pyplot()
    n = len(bars)
    fig, ax = plt.subplots(figsize=(8, 0.42 * n + 1.2))
    ys = list(range(n))[::-1]
    h = 0.38
    orig = [100 * (b[1] or 0) for b in bars]
    unl = [100 * (b[2] or 0) for b in bars]
    ax.barh([y + h / 2 for y in ys], orig, height=h, color="#9aa7b8", label="original")
    ax.barh([y - h / 2 for y in ys], unl, height=h, color="#2f6db5", label="unlearned")
    for y, b, o, u in zip(ys, bars, orig, unl):
        if b[1] is not None:
            ax.text(o + 1, y + h / 2, f"{o:.0f}", va="center", fontsize=7, color="#555")
        ax.text(u + 1, y - h / 2, f"{u:.0f}", va="center", fontsize=7, color="#1d4f8a")
    ax.set_yticks(ys)
    ax.set_yticklabels([b[0] for b in bars], fontsize=8)
    ax.set_xlim(0, 110)
    ax.set_xlabel("%", fontsize=8)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("before and after unlearning", fontsize=10)
    fig.tight_layout()
    return _png(fig, tight=True)


def tradeoff_png(data: dict[str, Any]) -> Optional[bytes]:
    """compare.json's data as a plot: the forget leak (or harmful) rate against utility, one
    labelled point per finished method and the original model. None when an axis is missing or no
    method finished."""
    xk, yk = data["axes"]["x"], data["axes"]["y"]
    if not xk or not yk:
        return None
    (xr, xn), (yr, yn) = xk.split(".", 1), yk.split(".", 1)

    def point(metrics: dict[str, Any]) -> Optional[tuple[float, float]]:
        x, y = metrics.get(xr, {}).get(xn), metrics.get(yr, {}).get(yn)
        return None if x is None or y is None else (x, y)

    runs = [(m, point(r["metrics"])) for m, r in data["runs"].items() if r["status"] == "done"]
    runs = [(m, p) for m, p in runs if p is not None]
    if not runs:
        return None
    xu, yu = data["metrics"][xr][xn]["unit"], data["metrics"][yr][yn]["unit"]
    sx, sy = (100.0 if xu == "fraction" else 1.0), (100.0 if yu == "fraction" else 1.0)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    orig = point(data["original"]["metrics"])
    if orig is not None:
        ax.scatter([orig[0] * sx], [orig[1] * sy], marker="*", s=220, color="#888888", zorder=3, label="original model")
        ax.annotate("original", (orig[0] * sx, orig[1] * sy), textcoords="offset points", xytext=(8, 6),
                    fontsize=9, color="#555555")
    colors = plt.get_cmap("tab10")
    labelled: dict[tuple[float, float], int] = {} if orig is None else {(round(orig[0], 3), round(orig[1], 3)): 1}
    for i, (m, (x, y)) in enumerate(runs):
        ax.scatter([x * sx], [y * sy], s=60, color=colors(i % 10), zorder=4, label=m)
        at = (round(x, 3), round(y, 3))  # methods at the same point: their labels stack upwards
        k = labelled.get(at, 0)
        labelled[at] = k + 1
        ax.annotate(m, (x * sx, y * sy), textcoords="offset points", xytext=(8, 6 + 12 * k), fontsize=9,
                    color=colors(i % 10))
    if data.get("audit") and xu == "fraction":  # robustness: how far the worst attack pushes each method
        shown = False
        for i, (m, (x, y)) in enumerate(runs):
            worst = data["runs"][m]["metrics"].get("audit", {}).get("worst_recovered")
            if worst is None:
                continue
            ax.annotate("", (worst * sx, y * sy), (x * sx, y * sy),
                        arrowprops=dict(arrowstyle="->", linestyle="--", color=colors(i % 10), alpha=0.7))
            ax.scatter([worst * sx], [y * sy], s=60, facecolors="none", edgecolors=colors(i % 10), zorder=4,
                       label=None if shown else "worst under attack (audit)")
            shown = True
    if xu == "fraction":
        ax.set_xlim(-5, 105)
    if yu == "fraction":
        ax.set_ylim(-5, 105)
    ax.set_xlabel(f"{axis_label(xk)}{' (%)' if xu == 'fraction' else ''}  (lower is better)")
    ax.set_ylabel(f"{axis_label(yk)}{' (%)' if yu == 'fraction' else ''}  (higher is better)")
    ax.set_title(f"{data['model']}: {data['max_steps']} steps per method, seed {data['seed']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _png(fig, tight=False)
