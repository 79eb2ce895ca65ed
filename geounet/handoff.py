"""Finished rows of a streamed tile's core, handed to the vectorizer before the tile is done.

A streamed tile (:meth:`geounet.predict.TilePredictor._streamed`) decides its core's classes
strip by strip, top to bottom. When the in-process raster stage vectorizes cores
(:class:`geounet.blocks.BlockPolygons`), it registers that as the *sink* here for the
duration of its loop; the predictor then hands every full band of ``rows`` finished rows to
the sink at once, so a scene that is one large tile is vectorized while the model works on
its lower rows, not after. The result says so (:attr:`geounet.jobs.TileResult.vectorized`)
and the raster stage does not hand it again.

The sink is a :class:`contextvars.ContextVar`: the in-process executor's generator runs in the
raster stage's context, so it sees the sink; Ray actors run elsewhere and see none.

Example:
    >>> class Sink:
    ...     def add(self, window, classes, confidence):
    ...         print(window.row, window.height)
    >>> with rows_to(Sink(), rows=1024):
    ...     active().rows
    1024
    >>> active() is None
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from geounet.geo import Window


class RowSink(Protocol):
    """Takes finished rows of a core: their window in the grid, class ids and confidence."""

    def add(self, window: Window, classes: np.ndarray, confidence: np.ndarray | None) -> None: ...


@dataclass(frozen=True)
class Handoff:
    """Where finished rows go, and in bands of how many rows (the vectorizer's block side)."""

    sink: RowSink
    rows: int


_ACTIVE: ContextVar[Handoff | None] = ContextVar("geounet_handoff", default=None)


def active() -> Handoff | None:
    """The sink registered in this context, if any."""
    return _ACTIVE.get()


@contextmanager
def rows_to(sink: RowSink, *, rows: int) -> Iterator[None]:
    """Register ``sink`` for bands of ``rows`` finished rows while the block runs."""
    if rows <= 0:
        raise ValueError(f"rows={rows} must be positive")
    token = _ACTIVE.set(Handoff(sink, rows))
    try:
        yield
    finally:
        _ACTIVE.reset(token)
