"""``geounet predict`` as a user runs it, whichever flags this checkout's CLI has.

The benchmarks call the real command line in a subprocess (``python -m geounet predict``).
Newer CLIs choose the outputs (``--outputs classes,confidence,polygons`` or
``--no-polygons``) and take a memory budget (``--memory 4GB``); older ones do not.
:func:`detect` reads ``geounet predict --help`` once and :class:`PredictCli` builds the
command from what it found, saying so (:attr:`PredictCli.note`) when it has to fall back.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.proctree import ROOT

RASTERS = "classes,confidence"


def _has_flag(help_text: str, flag: str) -> bool:
    """Whether ``flag`` is an option in a click help text (not a prefix of a longer flag).

    Example:
        >>> _has_flag("  --outputs TEXT  which\\n  --no-polygons", "--outputs")
        True
        >>> _has_flag("  --outputs-dir DIR", "--outputs")
        False
    """
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def _default_executor(help_text: str) -> str:
    """The executor the CLI uses when none is given, as its help prints it ('ray' when unsure).

    Example:
        >>> _default_executor("--executor [ray|local]  ray: ... [default: local]")
        'local'
    """
    m = re.search(r"--executor\b.*?\[default:\s*([\w-]+)\]", help_text, flags=re.S)
    return m.group(1) if m else "ray"


@dataclasses.dataclass(frozen=True)
class PredictCli:
    """What this checkout's ``geounet predict`` offers, and the commands for the benchmarks."""

    help_text: str

    @property
    def outputs(self) -> bool:
        return _has_flag(self.help_text, "--outputs")

    @property
    def no_polygons(self) -> bool:
        return _has_flag(self.help_text, "--no-polygons")

    @property
    def memory(self) -> bool:
        return _has_flag(self.help_text, "--memory")

    @property
    def rasters_only(self) -> bool:
        """Whether the CLI itself can skip the polygons."""
        return self.outputs or self.no_polygons

    @property
    def default_executor(self) -> str:
        return _default_executor(self.help_text)

    def rasters_args(self) -> list[str]:
        """The flags for classes + confidence only; [] when the CLI has none (see :attr:`note`)."""
        if self.outputs:
            return ["--outputs", RASTERS]
        if self.no_polygons:
            return ["--no-polygons"]
        return []

    @property
    def flags_note(self) -> str:
        """One line for the benchmark's output: which of the new flags this CLI has, its executor."""
        flags = (("--outputs", self.outputs), ("--no-polygons", self.no_polygons), ("--memory", self.memory))
        found = [f for f, ok in flags if ok]
        return (
            f"geounet predict: flags found {', '.join(found) or 'none of --outputs/--no-polygons/--memory'}; "
            f"default executor {self.default_executor}"
        )

    @property
    def note(self) -> str:
        """:attr:`flags_note` and how the rasters-only runs are made (the CLI's flag, or the fallback)."""
        rasters = (
            f"rasters only via `{' '.join(self.rasters_args())}`"
            if self.rasters_only
            else "rasters only: this CLI has no --outputs/--no-polygons, so FALLBACK to the library "
            "(planning.plan + the CLI's default executor + rasters.write_rasters, no publishing)"
        )
        return f"{self.flags_note}; {rasters}"

    def command(
        self, src: Path, model: Path, out: Path, *, rasters_only: bool = False, extra: Sequence[str] = ()
    ) -> list[str]:
        """``python -m geounet predict SRC --model M --out O`` (+ rasters-only flags, + ``extra``).

        With ``rasters_only`` on a CLI without the flags, the command runs
        ``bench.runners rasters`` instead (same plan and executor, no publishing).
        """
        if rasters_only and not self.rasters_only:
            executor = _flag_value(extra, "--executor") or self.default_executor
            return [
                sys.executable,
                "-m",
                "bench.runners",
                "rasters",
                "--src",
                str(src),
                "--model",
                str(model),
                "--out",
                str(out),
                "--executor",
                executor,
            ]
        flags = self.rasters_args() if rasters_only else []
        return [
            sys.executable,
            "-m",
            "geounet",
            "predict",
            str(src),
            "--model",
            str(model),
            "--out",
            str(out),
            *flags,
            *extra,
        ]


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value after ``flag`` in an argument list, or None.

    Example:
        >>> _flag_value(["--executor", "local", "-v"], "--executor")
        'local'
    """
    args = list(args)
    return args[args.index(flag) + 1] if flag in args[:-1] else None


@functools.cache
def _help(env_items: tuple[tuple[str, str], ...]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "geounet", "predict", "--help"],
        cwd=ROOT,
        env=dict(env_items),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"geounet predict --help failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def detect(env: Mapping[str, str]) -> PredictCli:
    """Read ``python -m geounet predict --help`` (cached per environment)."""
    return PredictCli(_help(tuple(sorted(env.items()))))
