"""``geounet train CONFIG``: train a U-Net on labelled data and write bundle, checkpoint, report."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(
    epilog="Example:\n\n\b\n  geounet train configs/train-landcover-brandenburg.yaml\n"
    "  geounet train configs/train-crack-uav75.yaml --set train.steps=200 --workers 2\n"
    "  geounet train configs/train-crack-uav75.yaml --resume\n"
    "  geounet train my-recipe.yaml --init-from geounet/data/landcover-brandenburg.safetensors"
)
@click.argument("config", type=click.Path(path_type=Path))
@click.option(
    "--resume", is_flag=True, help="Continue from the output folder's checkpoint (same step, optimizer)."
)
@click.option(
    "--init-from",
    "init_from",
    type=click.Path(path_type=Path),
    default=None,
    help="Fine-tune this bundle (a new head when the classes differ).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Data-parallel Ray Train workers (1 = in-process).",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Output folder (default runs/<name>)."
)
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config value, e.g. train.steps=200."
)
@click.option("--no-report", is_flag=True, help="Skip the evaluation report after training.")
def train(
    config: Path,
    resume: bool,
    init_from: Path | None,
    workers: int,
    out: Path | None,
    sets: tuple[str, ...],
    no_report: bool,
) -> None:
    """Train a U-Net from a recipe (image/mask pairs, or a scene with label polygons).

    Writes OUT/model.safetensors (best validation mIoU), OUT/checkpoint/ (safetensors + JSON,
    for --resume), OUT/history.json and OUT/report/ (Markdown, metrics JSON, plots, baseline).
    """
    from geounet import train as training
    from geounet.config import load_train_config
    from geounet.overrides import parse_overrides

    overrides = parse_overrides(sets)
    if out is not None:
        overrides["output"] = str(out)
    cfg = load_train_config(config, overrides=overrides)
    outcome = training.fit(cfg, resume=resume, init_bundle=init_from, workers=workers, report=not no_report)
    click.echo(
        f"trained {outcome.step} steps in {outcome.seconds:.0f} s; best val mIoU {outcome.best_miou:.3f} "
        f"at step {outcome.best_step}; bundle {outcome.bundle}"
    )
    if not no_report and outcome.bundle is not None:
        click.echo(f"report: {outcome.out / 'report' / 'report.md'}")
