"""One root error for geounet; subclasses mix in the matching builtin.

Every error message says what went wrong, shows the offending value, and says
how to fix it, so the CLI can print it as one line::

    ConfigError: tile=256 must be > 2*halo=256 (the core would be empty); raise --tile / predict.tile to at least 272 or lower --halo / predict.halo
"""

from __future__ import annotations


class GeounetError(Exception):
    """Root of every error geounet raises on purpose (bad input, bad data, failed I/O)."""


class ConfigError(GeounetError, ValueError):
    """A configuration value or command-line argument is invalid."""


class InputError(GeounetError, ValueError):
    """An input raster, vector or catalogue is unusable (corrupt, wrong bands, no CRS...)."""


class InputNotFoundError(GeounetError, FileNotFoundError):
    """An input file, URL or STAC item does not exist."""


class BundleError(GeounetError, ValueError):
    """A model bundle is truncated, tampered with or inconsistent."""


class SearchError(GeounetError, LookupError):
    """A STAC search failed or found nothing."""


class ReadError(GeounetError, OSError):
    """Reading a scene or asset failed (network, decoding, truncated file)."""


class WriteError(GeounetError, OSError):
    """Writing an output failed (permissions, disk full...); nothing finished-looking is left."""


class ExecutionError(GeounetError, RuntimeError):
    """A distributed or batch execution could not run (cluster too small, lock held...)."""


def first_line(exc: BaseException, *, limit: int = 300) -> str:
    """The first non-blank line of an exception's message (at most ``limit`` characters), for one-line errors.

    rasterio's "Read failed. See previous exception for details." is replaced by its cause,
    GDAL's own reason. The exception's type name stands in for an empty message.

    Example:
        >>> first_line(ValueError("bad value\\n  details..."))
        'bad value'
        >>> first_line(KeyError())
        'KeyError'
    """
    while "previous exception" in str(exc) and exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(exc).__name__
