"""``geounet evaluate --model FILE DATA...``: metrics and baselines on a recipe's validation split."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(
    epilog="Example:\n\n\b\n  geounet evaluate --model runs/crack-uav75/model.safetensors configs/train-crack-uav75.yaml\n"
    "  geounet evaluate --model geounet/data/landcover-brandenburg.safetensors \\\n"
    "      configs/train-landcover-brandenburg.yaml --out eval/"
)
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path), help="Model bundle.")
@click.argument("data", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("eval"),
    show_default=True,
    help="Report folder (one sub-folder per DATA recipe).",
)
@click.option("--no-baseline", is_flag=True, help="Skip the recipe's baseline (RandomForest / threshold).")
def evaluate(model_path: Path, data: tuple[Path, ...], out: Path, no_baseline: bool) -> None:
    """Evaluate a bundle on the validation split of each DATA training recipe (YAML).

    Per-class IoU, Dice/F1, precision, recall, pixel accuracy, mIoU, confusion matrix and the
    tolerant F1 of thin classes; the recipe's baseline side by side. Writes report.md,
    metrics.json and PNG plots.
    """
    from geounet import evaluate as ev
    from geounet.config import load_train_config

    for recipe in data:
        cfg = load_train_config(recipe)
        dest = out / cfg.name if len(data) > 1 else out
        doc = ev.report(model_path, cfg, out=dest, baselines=not no_baseline)
        for method, r in doc["results"].items():
            tol = " ".join(
                f"tolerant-F1[{n}]={t['f1']:.3f}" for n, t in r["tolerant"].items() if t["f1"] is not None
            )
            click.echo(f"{cfg.name} {method}: mIoU={r['miou']:.3f} {tol}".rstrip())
        click.echo(f"report: {dest / 'report.md'}")
