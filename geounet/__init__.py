"""geounet: tile, segment and vectorize satellite and aerial imagery at region scale."""

from __future__ import annotations

__version__ = "0.1.0"

from geounet.errors import GeounetError

__all__ = ["GeounetError", "__version__"]
