"""One root error for geounet; subclasses mix in the matching builtin.

Every error message says what went wrong, shows the offending value, and says
how to fix it, so the CLI can print it as one line::

    ConfigError: tiling.halo=300 must be < tiling.size/2=256; lower tiling.halo or raise tiling.size
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
