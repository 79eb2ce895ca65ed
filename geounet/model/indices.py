"""Spectral indices as extra model inputs: which ones exist, which bands they read, their math.

A normalized difference ``(a - b) / (a + b)`` of two reflectance bands is what a pixel
classifier would compute by hand (NDVI for vegetation, NDWI/MNDWI for water, NBR and NDMI
for moisture and bare ground). A small U-Net trained on a few thousand steps of sparse
labels gains from being given them instead of having to learn a ratio with ReLUs.

The network computes them itself from its normalized input (its first layer,
:class:`geounet.model.networks.SpectralIndices`, undoes the band normalization), so every
caller that feeds a bundle its bands - training, ``geounet evaluate``, the production
tiler, streamed strips - feeds it the indices too; a bundle records them as band-position
pairs in its spec (``ModelSpec.indices``). Pure Python and numpy; this module is the
oracle the torch layer is tested against.

Example:
    >>> bands = ("blue", "green", "red", "nir", "swir16", "swir22")
    >>> index_pairs(["ndvi", "mndwi"], bands)
    ((3, 2), (1, 4))
    >>> import numpy as np
    >>> normalized_difference(np.array([0.5, 0.0, 0.2]), np.array([0.1, 0.0, 0.2]))
    array([0.66666667, 0.        , 0.        ])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geounet.errors import ConfigError

#: Index name -> (band a, band b) of ``(a - b) / (a + b)``, bands by STAC common name.
SPECTRAL_INDICES: dict[str, tuple[str, str]] = {
    "ndvi": ("nir", "red"),  # vegetation (Rouse et al. 1974)
    "ndwi": ("green", "nir"),  # open water (McFeeters 1996)
    "mndwi": ("green", "swir16"),  # water vs built-up (Xu 2006)
    "ndmi": ("nir", "swir16"),  # canopy moisture (Gao 1996's NDWI, a.k.a. NDII)
    "nbr": ("nir", "swir22"),  # burn / bare soil (Key & Benson 2006)
}

#: Denominators below this (dark or nodata pixels) give 0 instead of a blown-up ratio.
EPS = 1e-6


def index_pairs(names: Sequence[str], bands: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """The band positions ``(a, b)`` of each named index, for a model whose inputs are ``bands``.

    Raises:
        ConfigError: on an unknown or repeated index name, or when a band it needs is not
            among ``bands`` (the message names ``model.indices`` and the missing band).
    """
    if len(set(names)) != len(names):
        raise ConfigError(f"model.indices={list(names)} repeats an index; list each index once")
    pairs = []
    for name in names:
        if name not in SPECTRAL_INDICES:
            raise ConfigError(
                f"model.indices: {name!r} is not a known spectral index; use some of {', '.join(SPECTRAL_INDICES)}"
            )
        need = SPECTRAL_INDICES[name]
        missing = [b for b in need if b not in bands]
        if missing:
            raise ConfigError(
                f"model.indices: {name!r} needs the bands {list(need)} but data.bands has no {missing} "
                f"(it has {list(bands)}); add the band or drop the index"
            )
        pairs.append((list(bands).index(need[0]), list(bands).index(need[1])))
    return tuple(pairs)


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / (a + b)`` of reflectances, clipped to [-1, 1]; 0 where ``a + b <= EPS``.

    Example:
        >>> normalized_difference(np.array([0.3]), np.array([0.1]))
        array([0.5])
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    total = a + b
    out = np.divide(a - b, total, out=np.zeros_like(total), where=total > EPS)
    return np.clip(out, -1.0, 1.0)
