"""Give freed C-heap memory back to the operating system between the stages of a job.

glibc's malloc keeps what numpy, torch and GDAL free in its arenas (one per thread that
allocated), and raises its mmap threshold after large blocks are freed, so buffers of up
to 32 MiB come from arenas and stay there: after the prediction loop a process holds
hundreds of MiB it no longer uses, and the next stage (the seam dissolve of a large
scene) allocates on top of them. :func:`trim` asks glibc to release them
(``malloc_trim(0)``: every arena, free pages in the middle of the heap too). Elsewhere
(macOS, musl, Windows) it does nothing.

Example:
    >>> isinstance(trim(), bool)
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from typing import Any


@functools.cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def trim() -> bool:
    """Release the free memory of every malloc arena to the OS; True when glibc did release some."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
