"""geounet: tile, segment and vectorize satellite and aerial imagery at region scale.

The package root imports nothing heavy (no torch, no GDAL): ``import geounet`` is instant.
The notebook API is the module :mod:`geounet.api`::

    from geounet import api
    scenes = api.search("earth-search", bbox=[12.5, 52.45, 12.6, 52.5], datetime="2024-06")
    ds = api.predict(scenes[0], "landcover.safetensors")   # xarray.Dataset
    gdf = api.vectorize(ds)                               # GeoDataFrame

The stages, in data-flow order: :mod:`~geounet.search` / :mod:`~geounet.scenes` (find and
composite imagery), :mod:`~geounet.read`, :mod:`~geounet.tiling`, :mod:`~geounet.infer`
with :mod:`~geounet.model`, :mod:`~geounet.merge`, :mod:`~geounet.write`,
:mod:`~geounet.vectorize`, :mod:`~geounet.publish`; :mod:`~geounet.pipeline` composes them
for one job (:mod:`~geounet.jobs`), :mod:`~geounet.distributed` runs them on Ray.
"""

from __future__ import annotations

from geounet.errors import GeounetError

__version__ = "0.1.0"

__all__ = ["GeounetError", "__version__"]
