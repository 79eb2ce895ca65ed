"""The model bundle: one value type and its file (safetensors weights + JSON metadata, no pickle).

Torch-free: weights are numpy arrays; :mod:`geounet.model.networks` turns a bundle into a
network and back. The file is one safetensors file: tensors are the network's
``state_dict`` (float32, or float16 with ``half=True``); all metadata is one JSON document
under the ``"geounet"`` key of the safetensors ``__metadata__``, using the STAC MLM
extension's vocabulary (``mlm:input``, ``mlm:output`` with ``classification:classes``...)
plus ``geounet:*`` fields, among them a sha256 of the tensor bytes. The file is read with
safetensors' own reader (:func:`safetensors.safe_open`), never unpickled.

The only I/O is in :func:`save`, :func:`load` and :func:`read_metadata` and in
:func:`default_provenance` (asks git for the commit of the source tree, if there is one).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from geounet import atomic
from geounet.errors import BundleError, ConfigError, InputNotFoundError, first_line
from geounet.model.spec import (
    NODATA_CLASS,
    ClassInfo,
    ModelSpec,
    Normalization,
    bundle_problems,
    raise_problems,
    receptive_field,
    state_shapes,
)

_META_KEY = "geounet"
_FORMAT = "geounet-bundle"
_FORMAT_VERSION = 1
FIX_EXPORT = "re-export it with `geounet model init` or `geounet train`"


@dataclass(frozen=True)
class Bundle:
    """Everything needed to run a trained (or randomly initialised) model on imagery.

    ``weights`` maps parameter/buffer names to numpy arrays (as stored in safetensors).
    """

    spec: ModelSpec
    bands: tuple[str, ...]
    normalization: Normalization
    classes: tuple[ClassInfo, ...]
    receptive_field: int
    tile: int
    halo: int
    weights: dict[str, Any] = field(repr=False, default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    name: str = "geounet-unet"

    @property
    def stride(self) -> int:
        """Total down-sampling factor of the network (``spec.stride``)."""
        return self.spec.stride

    @property
    def class_ids(self) -> tuple[int, ...]:
        """Class id of each output channel: channel ``k`` of the logits is ``class_ids[k]``."""
        return tuple(c.id for c in self.classes)


# --------------------------------------------------------------------------- validation


def weight_problems(spec: ModelSpec, weights: Mapping[str, Any]) -> list[str]:
    """Tensor names or shapes that do not fit the network of ``spec`` (:func:`state_shapes`)."""
    expected = state_shapes(spec)
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    found = []
    if missing or extra:
        found.append(
            f"tensor names do not match the {spec.arch} spec (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for name in sorted(set(expected) & set(weights)):
        shape = tuple(np.shape(weights[name]))
        if shape != expected[name]:
            found.append(f"tensor {name} has shape {shape}, the spec needs {expected[name]}")
            break
    return found


# --------------------------------------------------------------------------- provenance


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def default_provenance(**extra: Any) -> dict[str, Any]:
    """Provenance every bundle carries: creation time, geounet/torch versions, git commit.

    The git commit is asked of ``git`` in the source tree of this package (None when it
    is not a checkout or git is missing). ``extra`` entries (training data, epochs,
    metrics...) are added on top.
    """
    from geounet import __version__

    prov: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "geounet_version": __version__,
        "torch_version": _version("torch"),
        "git_commit": _git_commit(),
    }
    prov.update(extra)
    return prov


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


# --------------------------------------------------------------------------- metadata document


def weights_sha256(weights: Mapping[str, Any]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(weights):
        a = np.asarray(weights[name], order="C")
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


_ARCH_NAMES = {"unet": "U-Net", "resunet": "ResUNet", "attention-unet": "Attention U-Net"}


def _mlm_input(bundle: Bundle) -> dict[str, Any]:
    spec, norm = bundle.spec, bundle.normalization
    return {
        "name": "chip",
        "bands": list(bundle.bands),
        "input": {
            "shape": [-1, spec.in_channels, bundle.tile, bundle.tile],
            "dim_order": ["batch", "bands", "height", "width"],
            "data_type": "float32",
        },
        # (x*scale - mean)/std == (x - mean/scale) / (std/scale): MLM's z-score per band.
        "value_scaling": [
            {"type": "z-score", "mean": m / norm.scale, "stddev": s / norm.scale}
            for m, s in zip(norm.mean, norm.std, strict=True)
        ],
        "resize_type": None,
        "pre_processing_function": None,
    }


def _mlm_output(bundle: Bundle) -> dict[str, Any]:
    return {
        "name": "classes",
        "tasks": ["semantic-segmentation"],
        "result": {
            "shape": [-1, bundle.spec.n_classes, bundle.tile, bundle.tile],
            "dim_order": ["batch", "channel", "height", "width"],
            "data_type": "float32",
        },
        "classification:classes": [
            {"value": c.id, "name": c.name, "color_hint": c.color.lstrip("#").upper()} for c in bundle.classes
        ],
        "post_processing_function": {"format": "python", "expression": "torch.softmax(logits, dim=1)"},
    }


def to_metadata(bundle: Bundle, *, weights: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The bundle's metadata document (STAC MLM vocabulary plus ``geounet:*`` fields).

    ``weights`` are the tensors as stored (default: the bundle's own); their dtype and
    sha256 are recorded. Provenance values that JSON cannot hold (paths, datetimes) are
    written as strings when saved.
    """
    weights = bundle.weights if weights is None else weights
    spec, norm = bundle.spec, bundle.normalization
    floats = [np.asarray(w) for w in weights.values() if np.asarray(w).dtype.kind == "f"]
    dtypes = sorted({w.dtype.name for w in floats})
    return {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "mlm:name": bundle.name,
        "mlm:architecture": _ARCH_NAMES.get(spec.arch, spec.arch),
        "mlm:tasks": ["semantic-segmentation"],
        "mlm:framework": "pytorch",
        "mlm:framework_version": (_version("torch") or "unknown").split("+")[0],
        "mlm:memory_size": int(sum(np.asarray(w).nbytes for w in weights.values())),
        "mlm:total_parameters": int(sum(w.size for w in floats)),
        "mlm:pretrained": bundle.provenance.get("source") != "random-init",
        "mlm:accelerator": "cuda",
        "mlm:accelerator_constrained": False,
        "mlm:batch_size_suggestion": 8,
        "mlm:input": [_mlm_input(bundle)],
        "mlm:output": [_mlm_output(bundle)],
        "mlm:hyperparameters": {
            "arch": spec.arch,
            "in_channels": spec.in_channels,
            "n_classes": spec.n_classes,
            "depth": spec.depth,
            "width": spec.width,
            "norm": spec.norm,
            "upsample": spec.upsample,
            # only when present, so bundles without indices keep their metadata unchanged
            **({"indices": [list(p) for p in spec.indices]} if spec.indices else {}),
        },
        "geounet:normalization": {"mean": list(norm.mean), "std": list(norm.std), "scale": norm.scale},
        "geounet:nodata_class": NODATA_CLASS,
        "geounet:stride": spec.stride,
        "geounet:receptive_field": bundle.receptive_field,
        "geounet:tile": bundle.tile,
        "geounet:halo": bundle.halo,
        "geounet:provenance": bundle.provenance,
        "geounet:weights_dtype": dtypes[0] if len(dtypes) == 1 else ",".join(dtypes),
        "geounet:weights_sha256": weights_sha256(weights),
    }


def _from_metadata(meta: Mapping[str, Any], weights: dict[str, np.ndarray]) -> Bundle:
    hp = meta["mlm:hyperparameters"]
    spec = ModelSpec(
        in_channels=hp["in_channels"],
        n_classes=hp["n_classes"],
        arch=hp["arch"],
        depth=hp["depth"],
        width=hp["width"],
        norm=hp["norm"],
        upsample=hp["upsample"],
        indices=tuple((int(a), int(b)) for a, b in hp.get("indices", [])),
    )
    norm = meta["geounet:normalization"]
    out = meta["mlm:output"][0]
    return Bundle(
        spec=spec,
        bands=tuple(meta["mlm:input"][0]["bands"]),
        normalization=Normalization(
            mean=tuple(float(v) for v in norm["mean"]),
            std=tuple(float(v) for v in norm["std"]),
            scale=float(norm["scale"]),
        ),
        classes=tuple(
            ClassInfo(int(c["value"]), str(c["name"]), "#" + str(c["color_hint"]).lower())
            for c in out["classification:classes"]
        ),
        receptive_field=int(meta["geounet:receptive_field"]),
        tile=int(meta["geounet:tile"]),
        halo=int(meta["geounet:halo"]),
        weights=weights,
        provenance=dict(meta.get("geounet:provenance") or {}),
        name=str(meta.get("mlm:name", "geounet-unet")),
    )


# --------------------------------------------------------------------------- the file


def save(bundle: Bundle, path: str | os.PathLike[str], *, half: bool = False) -> Path:
    """Write the bundle as one safetensors file (weights + JSON metadata); returns the path.

    ``half=True`` stores floating-point weights as float16 (half the size; loads back as
    float32). The file is written under a temporary name beside ``path`` and renamed
    when complete, so an interrupted save never leaves a file that looks finished.

    Raises:
        ConfigError: when the bundle is inconsistent or its weights overflow float16.
        WriteError: when the file cannot be written.
    """
    raise_problems(bundle.spec, bundle.bands, bundle.normalization, bundle.classes, bundle.tile, bundle.halo)
    found = weight_problems(bundle.spec, bundle.weights)
    if found:
        raise ConfigError(f"bundle {bundle.name!r}: {found[0]}; build it with init_bundle/bundle_from_module")
    tensors: dict[str, np.ndarray] = {}
    for key, value in bundle.weights.items():
        arr = np.asarray(value, order="C")
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float16 if half else np.float32)
            if half and not np.isfinite(arr).all():
                raise ConfigError(f"weight {key} overflows float16; save without --half (half=False)")
        tensors[key] = arr
    metadata = {_META_KEY: json.dumps(to_metadata(bundle, weights=tensors), allow_nan=False, default=str)}
    data = safetensors.numpy.save(tensors, metadata=metadata)
    return atomic.write_bytes(path, data, what="model bundle", durable=True)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputNotFoundError(
            f"model bundle {path} does not exist; check the path or create one with `geounet model init`"
        )
    if path.is_dir():
        raise BundleError(f"model bundle {path} is a folder; pass the .safetensors file inside it")


#: safetensors' header errors (its messages) that mean a cut-off file rather than another format.
_TRUNCATED = ("header too small", "invalid header length", "incomplete metadata")


def _open_error(path: Path, exc: Exception) -> BundleError:
    """A one-line BundleError for what safetensors' reader refused in ``path``."""
    if isinstance(exc, OSError):
        return BundleError(f"cannot read model bundle {path}: {exc.strerror or exc}; check permissions")
    reason = first_line(exc).removeprefix("Error while deserializing header: ")
    if any(t in reason for t in _TRUNCATED):
        return BundleError(f"{path} is truncated or empty ({reason}); {FIX_EXPORT}")
    if "invalid JSON in header" in reason or "offset" in reason.lower():
        return BundleError(f"{path} has a corrupt safetensors header ({reason}); {FIX_EXPORT}")
    return BundleError(f"{path} is not a geounet bundle (safetensors); {FIX_EXPORT}")


def _metadata_of(path: Path, extra: Mapping[str, str] | None) -> dict[str, Any]:
    raw = extra.get(_META_KEY) if extra else None
    if raw is None:
        raise BundleError(f"{path} is a safetensors file without geounet metadata; {FIX_EXPORT}")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise BundleError(f"{path} has invalid geounet metadata (not JSON); {FIX_EXPORT}") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise BundleError(f"{path} has metadata that is not a {_FORMAT} document; {FIX_EXPORT}")
    if meta.get("format_version") != _FORMAT_VERSION:
        raise BundleError(
            f"{path} has bundle format_version={meta.get('format_version')!r}, this geounet reads "
            f"{_FORMAT_VERSION}; upgrade geounet or {FIX_EXPORT}"
        )
    return meta


def _read(path: Path, *, tensors: bool) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata document and (with ``tensors``) the weights, through safetensors' reader."""
    _check_file(path)
    try:
        with safe_open(path, framework="numpy") as f:
            meta = _metadata_of(path, f.metadata())
            weights = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}  # noqa: SIM118 (not iterable)
    except (SafetensorError, OSError) as exc:
        raise _open_error(path, exc) from None
    return meta, weights


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata document of a bundle file (no weights read: use :func:`load` for that).

    Raises:
        InputNotFoundError: when the file does not exist.
        BundleError: when it is not a complete geounet bundle.
    """
    return _read(Path(path), tensors=False)[0]


def load(path: str | os.PathLike[str]) -> Bundle:
    """Read and verify a bundle file; never unpickles anything (safetensors + JSON only).

    Weights come back as stored (float32, or float16 for a ``half`` bundle);
    :func:`geounet.model.networks.module_from_bundle` turns them into a float32 network.

    Raises:
        InputNotFoundError: when the file does not exist.
        BundleError: when the file is not a safetensors bundle (e.g. a pickled ``.pt``),
            is truncated, has missing or invalid metadata, fails its weights checksum, or
            has tensors that do not match its spec.
    """
    p = Path(path)
    meta, weights = _read(p, tensors=True)
    if weights_sha256(weights) != meta.get("geounet:weights_sha256"):
        raise BundleError(
            f"{p} fails its weights checksum (sha256 differs from the metadata): the file was modified or "
            f"damaged; restore the original or {FIX_EXPORT}"
        )
    try:
        bundle = _from_metadata(meta, weights)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(
            f"{p} has invalid geounet metadata ({type(exc).__name__}: {exc}); {FIX_EXPORT}"
        ) from None
    b = bundle
    found = bundle_problems(
        b.spec, bands=b.bands, normalization=b.normalization, classes=b.classes, tile=b.tile, halo=b.halo
    )
    found += weight_problems(b.spec, weights) if not found else []
    if not found and b.receptive_field != receptive_field(b.spec):
        found.append(
            f"receptive_field={b.receptive_field} disagrees with the spec's {receptive_field(b.spec)}"
        )
    if found:
        raise BundleError(f"{p} is inconsistent: {found[0]}; {FIX_EXPORT}")
    return bundle
