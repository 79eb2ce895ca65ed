"""``geounet evaluate --model FILE DATA...``: metrics and baselines on labelled data.

DATA is a training recipe (YAML: its validation split and its baseline) or a folder of
images whose masks are in the matching ``--masks`` folder (classes from the model bundle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def _values(raw: str | None) -> list[int] | None:
    if raw is None:
        return None
    try:
        return [int(v) for v in raw.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"{raw!r} is not a comma-separated list of integers; e.g. --mask-values 0,255,204",
            param_hint="--mask-values",
        ) from None


@click.command(
    epilog="Example:\n\n\b\n  geounet evaluate --model runs/crack-uav75/model.safetensors configs/train-crack-uav75.yaml\n"
    "  geounet evaluate --model geounet/data/landcover-brandenburg.safetensors \\\n"
    "      configs/train-landcover-brandenburg.yaml --out eval/\n"
    "  geounet evaluate --model runs/crack-uav75/model.safetensors photos/ --masks masks/ \\\n"
    "      --mask-values 0,255,204 --tolerant crack --dark-class crack"
)
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path), help="Model bundle.")
@click.argument("data", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--masks",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Mask folder of each DATA image folder, in order (masks matched by file stem).",
)
@click.option(
    "--mask-values",
    default=None,
    metavar="V0,V1,...",
    help="Image folders: the mask value of each model class, in class order (default: the class id).",
)
@click.option("--mask-channel", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--tolerant", multiple=True, metavar="CLASS", help="Image folders: also score CLASS with the tolerant F1."
)
@click.option("--tolerance", type=click.FloatRange(min=0), default=2.0, show_default=True, help="Pixels.")
@click.option(
    "--dark-class",
    default=None,
    metavar="CLASS",
    help="Image folders: add the Otsu/adaptive threshold baseline for this dark thin class.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("eval"),
    show_default=True,
    help="Report folder (one sub-folder per DATA when several).",
)
@click.option("--no-baseline", is_flag=True, help="Skip the baseline (RandomForest / threshold).")
@click.option(
    "--cv-train",
    is_flag=True,
    help="Recipes with data.split: also train the recipe's U-Net on each spatial CV fold (k trainings).",
)
def evaluate(
    model_path: Path,
    data: tuple[Path, ...],
    masks: tuple[Path, ...],
    mask_values: str | None,
    mask_channel: int,
    tolerant: tuple[str, ...],
    tolerance: float,
    dark_class: str | None,
    out: Path,
    no_baseline: bool,
    cv_train: bool,
) -> None:
    """Evaluate a bundle on each DATA: a training recipe (YAML) or a folder of images.

    A recipe is scored on its validation split with its baseline. An image folder is scored
    against the masks in the matching --masks folder. Reports per-class IoU, Dice/F1,
    precision, recall, pixel accuracy, mIoU, the confusion matrix and the tolerant F1 of thin
    classes, the baseline side by side. Writes report.md, metrics.json and PNG plots.
    """
    from geounet import evaluate as ev
    from geounet import model
    from geounet.config import load_train_config

    folders = [d for d in data if d.is_dir()]
    if len(masks) != len(folders):
        raise click.BadParameter(
            f"{len(folders)} image folder(s) {[str(f) for f in folders]} but {len(masks)} --masks folder(s); "
            "give one --masks per image folder, in the same order",
            param_hint="--masks",
        )
    mask_of = dict(zip(folders, masks, strict=True))
    values = _values(mask_values)
    bundle = model.load(model_path) if folders else None
    for item in data:
        if item in mask_of and bundle is not None:
            cfg = ev.folder_config(
                bundle,
                item,
                mask_of[item],
                mask_values=values,
                mask_channel=mask_channel,
                tolerant=tolerant,
                tolerance=tolerance,
                dark_class=dark_class,
            )
        else:
            cfg = load_train_config(item)
        dest = out / cfg.name if len(data) > 1 else out
        unet_cv = _unet_cv(item, cfg, dest) if cv_train else None
        doc = ev.report(model_path, cfg, out=dest, baselines=not no_baseline, unet_cv=unet_cv)
        click.echo(f"{cfg.name}: scored on the {doc['scored_on']}")
        for row in doc["summary"]:
            click.echo(f"{cfg.name} {_line(row, doc['results'].get(row['method']))}")
        click.echo(f"report: {dest / 'report.md'}")


def _unet_cv(item: Path, cfg: Any, dest: Path) -> Any:
    """``--cv-train``: the U-Net trained and scored on each spatial fold of the recipe."""
    if getattr(cfg.data, "split", None) is None:
        raise click.BadParameter(
            f"{item} has no held-out region; add data.split: {{kind: region, bbox: [...]}} to the "
            "recipe or leave out --cv-train",
            param_hint="--cv-train",
        )
    from geounet import crossval

    return crossval.unet(cfg.model_copy(update={"output": dest / "cv-runs"}))


def _line(row: dict[str, Any], res: dict[str, Any] | None) -> str:
    """``METHOD: mIoU=… held-out … CV … val …`` (the primary score first; absent ones left out)."""
    parts = [f"{row['method']}:"]
    if res is not None and res["miou"] is not None:
        parts.append(f"{'held-out-' if row['held_out_miou'] is not None else ''}mIoU={res['miou']:.3f}")
    if row["cv_miou_mean"] is not None:
        parts.append(f"CV-mIoU={row['cv_miou_mean']:.3f}±{row['cv_miou_std']:.3f}({row['cv_folds']} folds)")
    if row["held_out_miou"] is not None and row["val_miou"] is not None:
        parts.append(f"val-mIoU={row['val_miou']:.3f}")
    if res is not None:
        parts += [
            f"tolerant-F1[{n}]={t['f1']:.3f}" for n, t in res["tolerant"].items() if t["f1"] is not None
        ]
    return " ".join(parts)
