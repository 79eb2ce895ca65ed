"""The CPU cores of one process, shared between the model and the work that runs beside it.

On a machine with few cores the model's intra-op (OpenMP) threads and a thread working
beside them (the in-process vectorizer: GDAL's polygonize, shapely, the GeoPackage write)
fight over the cores: a parallel region waits at its barrier for the thread that was
descheduled, so the model loses much more than the other thread's share. Measured at 6000²
on this project's 2-core CPU: polygons cost 55 s of wall time for about 30 s of CPU.

Instead, work beside the model says so (:meth:`CoreShare.beside`), and the model asks
before each forward call how many threads it may use (:meth:`CoreShare.model_threads`):
all of them when nothing runs beside it, one fewer per busy thread. CPU convolutions give
bit-identical results at any thread count (tested), so the outputs do not change.

Example:
    >>> share = CoreShare()
    >>> share.model_threads(2)
    2
    >>> with share.beside():
    ...     share.model_threads(2), share.model_threads(1)
    (1, 1)
    >>> share.model_threads(2)
    2
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class CoreShare:
    """A count of threads working beside the model in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = 0

    @contextlib.contextmanager
    def beside(self) -> Iterator[None]:
        """Mark the calling thread busy beside the model while the block runs."""
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1

    def model_threads(self, threads: int) -> int:
        """The model's threads now, out of ``threads``: one fewer per busy thread, at least one."""
        return max(1, threads - self._busy)


#: The process's share: the vectorizer thread (:mod:`geounet.blocks`) marks itself busy in it,
#: the predictor (:mod:`geounet.infer`) reads it before each forward call on the CPU.
SHARE = CoreShare()
