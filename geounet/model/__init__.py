"""The model, in three rooms: what it is (:mod:`.spec`), its file (:mod:`.bundle`), its network (:mod:`.networks`).

Importing :mod:`geounet.model` loads no torch: the spec types, the receptive-field math,
:func:`normalize` and the bundle file (:func:`load`, :func:`save`, :func:`read_metadata`)
are re-exported here. Building or running a network needs torch: import
:mod:`geounet.model.networks` (``build``, ``init_bundle``, ``module_from_bundle``,
``bundle_from_module``, ``fuse_batchnorm``).

Example:
    >>> from geounet import model
    >>> model.receptive_field(model.ModelSpec(in_channels=3, n_classes=2, depth=2, width=4))
    23
"""

from __future__ import annotations

from geounet.model.bundle import (
    Bundle,
    default_provenance,
    load,
    read_metadata,
    save,
    to_metadata,
    weight_problems,
    weights_sha256,
)
from geounet.model.spec import (
    ARCHS,
    NODATA_CLASS,
    NORMS,
    UPSAMPLES,
    Arch,
    ClassInfo,
    ModelSpec,
    Norm,
    Normalization,
    Upsample,
    default_tile,
    normalize,
    receptive_field,
    recommended_halo,
    state_shapes,
)

__all__ = [
    "ARCHS",
    "NODATA_CLASS",
    "NORMS",
    "UPSAMPLES",
    "Arch",
    "Bundle",
    "ClassInfo",
    "ModelSpec",
    "Norm",
    "Normalization",
    "Upsample",
    "default_provenance",
    "default_tile",
    "load",
    "normalize",
    "read_metadata",
    "receptive_field",
    "recommended_halo",
    "save",
    "state_shapes",
    "to_metadata",
    "weight_problems",
    "weights_sha256",
]
