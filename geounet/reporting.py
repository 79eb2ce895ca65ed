"""The evaluation report: Markdown tables, confusion-matrix and training-curve plots.

Rendering only (no model, no data): :func:`markdown` lays out the scores
:mod:`geounet.evaluate` computed (held-out region, spatial CV mean ± std and validation
split, each method side by side); :func:`plots` writes one row-normalised confusion PNG per
method and the training curves. Files are written atomically (temp name, then renamed).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from geounet import atomic


def _plot_confusion(res: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(res["confusion"], dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    names = res["classes"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(names), 1 + 0.6 * len(names)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("labelled")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save_fig(fig, path)


def _save_fig(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue(), what="report plot")


def _plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    a1.plot(steps, [h["loss"] for h in history], marker=".")
    a1.set_xlabel("step")
    a1.set_ylabel("training loss (CE + Dice)")
    a2.plot(steps, [h["val_miou"] or 0 for h in history], marker=".", label="val mIoU")
    tol = sorted({k for h in history for k in (h.get("val_tolerant_f1") or {})})
    for name in tol:
        a2.plot(
            steps,
            [(h["val_tolerant_f1"] or {}).get(name) or 0 for h in history],
            marker=".",
            label=f"val tolerant F1 {name}",
        )
    a2.set_xlabel("step")
    a2.legend(fontsize=8)
    fig.tight_layout()
    _save_fig(fig, path)


def slug(method: str) -> str:
    """A file-name part for a method: ``"threshold adaptive(window=25,k=3.0)"`` → ``threshold-adaptive``.

    Example:
        >>> slug("threshold adaptive(window=25,k=3.0)"), slug("RandomForest")
        ('threshold-adaptive', 'randomforest')
    """
    return "-".join(method.split("(")[0].lower().split())


def fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def summary_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: each method's held-out, spatial-CV (mean ± std) and validation mIoU.

    Example:
        >>> rows = [{"method": "RF", "held_out_miou": 0.3, "cv_miou_mean": 0.31, "cv_miou_std": 0.02,
        ...          "cv_folds": 4, "val_miou": 0.33}]
        >>> summary_table(rows)[-1]
        '| RF | 0.300 | 0.310 ± 0.020 (4 folds) | 0.330 |'
    """
    lines = ["| method | held-out mIoU | spatial CV mIoU | validation mIoU |", "|---|---|---|---|"]
    for r in rows:
        cv = (
            "–"
            if r["cv_miou_mean"] is None
            else f"{r['cv_miou_mean']:.3f} ± {r['cv_miou_std']:.3f} ({r['cv_folds']} folds)"
        )
        lines.append(f"| {r['method']} | {fmt(r['held_out_miou'])} | {cv} | {fmt(r['val_miou'])} |")
    return lines


def markdown(
    results: dict[str, dict[str, Any]], meta: dict[str, Any], *, summary: list[dict[str, Any]] | None = None
) -> str:
    """The report: the side-by-side summary, then the scored side's per-class tables per method."""
    names = next(iter(results.values()))["classes"]
    lines = [f"# Evaluation: {meta['model']}", ""]
    held = meta.get("held_out")
    if held:
        lines += [
            f"Data: {meta['recipe']}. Scored on the held-out region bbox {held['bbox']} "
            f"({held['labelled_pixels']} labelled px, {held['share_of_labelled']:.1%} of the labels; never "
            "trained, stopped or selected on; baselines fit on all labels outside it). Spatial CV: "
            f"{held['cv_folds']} folds of whole blocks outside the region. Validation: {meta['split']}.",
            "",
        ]
    else:
        lines += [f"Data: {meta['recipe']} — validation split ({meta['split']}).", ""]
    if summary:
        lines += [*summary_table(summary), ""]
    lines += [
        "| method | mIoU | pixel acc. | " + " | ".join(f"IoU {n}" for n in names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for method, r in results.items():
        lines.append(
            f"| {method} | {fmt(r['miou'])} | {fmt(r['pixel_accuracy'])} | "
            + " | ".join(fmt(r["iou"][n]) for n in names)
            + " |"
        )
    lines += _tolerant_table(results)
    for method, r in results.items():
        lines += _method_tables(method, r, names)
    lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in meta["plots"]), ""]
    if meta.get("train_seconds") is not None:
        lines.append(f"Training time: {meta['train_seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def _tolerant_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """The tolerant precision/recall/F1 rows of every method (none without tolerant classes)."""
    if not next(iter(results.values()))["tolerant"]:
        return []
    lines = [
        "",
        "Tolerant scores (a predicted pixel within the tolerance of a labelled one counts, "
        "and vice versa for recall):",
        "",
        "| method | class | tolerance px | precision | recall | F1 |",
        "|---|---|---|---|---|---|",
    ]
    for method, r in results.items():
        for cname, t in r["tolerant"].items():
            lines.append(
                f"| {method} | {cname} | {t['tolerance_px']:g} | {fmt(t['precision'])} | "
                f"{fmt(t['recall'])} | {fmt(t['f1'])} |"
            )
    return lines


def _method_tables(method: str, r: dict[str, Any], names: list[str]) -> list[str]:
    """One method's per-class table and confusion matrix."""
    lines = [
        "",
        f"## {method}",
        "",
        "| class | IoU | Dice/F1 | precision | recall |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        lines.append(
            f"| {n} | {fmt(r['iou'][n])} | {fmt(r['dice'][n])} | {fmt(r['precision'][n])} | "
            f"{fmt(r['recall'][n])} |"
        )
    lines += [
        "",
        "Confusion matrix (rows labelled, columns predicted, pixels):",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for n, row in zip(names, r["confusion"], strict=True):
        lines.append(f"| {n} | " + " | ".join(str(v) for v in row) + " |")
    return lines


def plots(results: dict[str, dict[str, Any]], history: list[dict[str, Any]] | None, out: Path) -> list[str]:
    """One confusion PNG per method (the first is ``confusion.png``) and the training curves."""
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    for i, (method, r) in enumerate(results.items()):
        p = out / ("confusion.png" if i == 0 else f"confusion-{slug(method)}.png")
        _plot_confusion(r, f"{method}: confusion (row-normalised)", p)
        plots.append(p.name)
    if history:
        _plot_curves(history, out / "curves.png")
        plots.append("curves.png")
    return plots
