"""U-Net variants, receptive field, shift-equivariance and the safetensors bundle."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geounet import model
from geounet.errors import BundleError, ConfigError, InputNotFoundError
from geounet.model import ClassInfo, ModelSpec, Normalization, networks

CLASSES = (ClassInfo(0, "background", "#000000"), ClassInfo(1, "crack", "#ff0000"))
VARIANTS = [(arch, up) for arch in ("unet", "resunet", "attention-unet") for up in ("transpose", "bilinear")]


def small_spec(
    arch: str = "unet", upsample: str = "transpose", depth: int = 2, width: int = 4, **kw: object
) -> ModelSpec:
    return ModelSpec(in_channels=3, n_classes=2, arch=arch, depth=depth, width=width, upsample=upsample, **kw)  # type: ignore[arg-type]


def eval_net(spec: ModelSpec, seed: int = 0, *, live: bool = False) -> torch.nn.Module:
    """A float64 eval-mode network with non-trivial BatchNorm statistics.

    ``live=True`` gives every BatchNorm a positive bias so (almost) no ReLU is dead and
    gradients reach every input pixel the network can depend on.
    """
    torch.manual_seed(seed)
    net = networks.build(spec).double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                if live:
                    m.bias.uniform_(0.5, 1.5)
    return net


def probe_extent(spec: ModelSpec, *, n_inputs: int = 4) -> tuple[int, int, int, int]:
    """(row_lo, row_hi, col_lo, col_hi) offsets of input pixels with a nonzero gradient.

    One output pixel per batch element, at every phase modulo the stride (the diagonal),
    with several random inputs so every max-pool choice and ReLU path is exercised.
    """
    net = eval_net(spec, live=True)
    stride, radius = spec.stride, model.receptive_field(spec)
    size = model.spec.round_up(2 * radius + 3 * stride, stride)
    centre = size // 2 - stride // 2
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n_inputs * stride, spec.in_channels, size, size, dtype=torch.float64, generator=gen)
    x.requires_grad_(True)
    y = net(x)
    offsets = [b % stride for b in range(x.shape[0])]
    target = sum(y[b, :, centre + k, centre + k].sum() for b, k in enumerate(offsets))
    assert isinstance(target, torch.Tensor)
    target.backward()
    assert x.grad is not None
    grad = x.grad.abs().sum(dim=1)
    rows_lo, rows_hi, cols_lo, cols_hi = [], [], [], []
    for b, k in enumerate(offsets):
        rr, cc = torch.nonzero(grad[b], as_tuple=True)
        if not len(rr):  # every last-layer ReLU dead at this pixel for this input: no information
            continue
        p = centre + k
        rows_lo.append(int(rr.min()) - p)
        rows_hi.append(int(rr.max()) - p)
        cols_lo.append(int(cc.min()) - p)
        cols_hi.append(int(cc.max()) - p)
    assert len(rows_lo) >= x.shape[0] // 2, "too many dead probes; use more inputs"
    return min(rows_lo), max(rows_hi), min(cols_lo), max(cols_hi)


@pytest.mark.parametrize(("arch", "upsample"), VARIANTS)
def test_receptive_field_matches_gradient_probe(arch: str, upsample: str) -> None:
    spec = small_spec(arch, upsample, depth=2)
    lo, hi = model.spec._rf_interval(spec)
    r_lo, r_hi, c_lo, c_hi = probe_extent(spec)
    # The analytic interval bounds the true dependency and is attained (tight) on both sides.
    assert (r_lo, r_hi) == (lo, hi)
    assert (c_lo, c_hi) == (lo, hi)
    assert model.receptive_field(spec) == max(-lo, hi)


@pytest.mark.parametrize(("depth", "upsample", "radius"), [(3, "bilinear", 58), (4, "transpose", 107)])
def test_receptive_field_deeper_probe(depth: int, upsample: str, radius: int) -> None:
    spec = ModelSpec(in_channels=1, n_classes=2, depth=depth, width=2, upsample=upsample)  # type: ignore[arg-type]
    r_lo, r_hi, c_lo, c_hi = probe_extent(spec, n_inputs=1)
    assert (r_lo, r_hi) == (c_lo, c_hi) == model.spec._rf_interval(spec)
    assert max(-r_lo, r_hi) == model.receptive_field(spec) == radius


def test_receptive_field_values_and_halo() -> None:
    base = ModelSpec(in_channels=3, n_classes=2)
    assert model.receptive_field(base) == 107
    assert model.recommended_halo(base) == 112
    assert model.receptive_field(dataclasses.replace(base, depth=3)) == 51
    assert model.recommended_halo(dataclasses.replace(base, depth=3)) == 56
    for depth in range(1, 7):
        spec = dataclasses.replace(base, depth=depth)
        halo = model.recommended_halo(spec)
        assert halo % spec.stride == 0 and halo - spec.stride < model.receptive_field(spec) <= halo


@pytest.mark.parametrize(("arch", "upsample"), VARIANTS)
@pytest.mark.parametrize("norm", ["batch", "none"])
@pytest.mark.parametrize(("depth", "width"), [(1, 3), (3, 8)])
def test_state_shapes_are_the_networks(arch: str, upsample: str, norm: str, depth: int, width: int) -> None:
    """The torch-free tensor layout the bundle file checks against is the built network's state_dict."""
    spec = small_spec(arch=arch, upsample=upsample, norm=norm, depth=depth, width=width)
    built = {k: tuple(v.shape) for k, v in networks.build(spec).state_dict().items()}
    assert model.state_shapes(spec) == built


@pytest.mark.parametrize(("arch", "upsample"), VARIANTS)
@pytest.mark.parametrize("norm", ["batch", "none"])
def test_forward_shapes(arch: str, upsample: str, norm: str) -> None:
    net = networks.build(small_spec(arch, upsample, norm=norm)).eval()
    with torch.inference_mode():
        y = net(torch.zeros(2, 3, 12, 20))
    assert tuple(y.shape) == (2, 2, 12, 20)


def test_forward_rejects_unaligned_input() -> None:
    net = networks.build(small_spec()).eval()
    with pytest.raises(ValueError, match="multiple of the model's stride 4"):
        net(torch.zeros(1, 3, 10, 12))


def test_no_spatial_normalisation_or_global_pooling() -> None:
    spec = ModelSpec(in_channels=3, n_classes=2, arch="attention-unet", depth=3, width=4)
    banned = (
        torch.nn.GroupNorm,
        torch.nn.InstanceNorm2d,
        torch.nn.LayerNorm,
        torch.nn.AdaptiveAvgPool2d,
        torch.nn.AdaptiveMaxPool2d,
        torch.nn.MultiheadAttention,
    )
    assert not [m for m in networks.build(spec).modules() if isinstance(m, banned)]


@pytest.mark.parametrize(("arch", "upsample"), VARIANTS)
def test_shift_equivariance_by_stride(arch: str, upsample: str) -> None:
    spec = small_spec(arch, upsample, depth=3)
    net = eval_net(spec, seed=3)
    s, r = spec.stride, model.receptive_field(spec)
    x = torch.randn(1, 3, 160, 176, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        full = net(x)
        shifted = net(x[..., s:, s:])
        off_lattice = net(x[..., 1 : 1 + 152, 1 : 1 + 168])
    # Away from the borders (by the receptive-field radius) the predictions agree exactly.
    a = full[..., s + r : 160 - r, s + r : 176 - r]
    b = shifted[..., r : 160 - s - r, r : 176 - s - r]
    assert torch.allclose(a, b, rtol=0, atol=1e-10)
    # A shift off the pooling lattice does not (this is why tiles are stride-aligned).
    c = off_lattice[..., s + r - 1 : 160 - r - 1, s + r - 1 : 176 - r - 1]
    assert not torch.allclose(a, c, rtol=0, atol=1e-6)


def test_halo_crop_reproduces_whole_image() -> None:
    spec = small_spec("unet", "bilinear", depth=3)
    net = eval_net(spec, seed=5)
    halo = model.recommended_halo(spec)
    x = torch.randn(1, 3, 192, 192, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        whole = net(x)
        r0 = c0 = 64  # a stride-aligned core of 32 px read with the halo on every side
        tile = net(x[..., r0 - halo : r0 + 32 + halo, c0 - halo : c0 + 32 + halo])
    core = tile[..., halo : halo + 32, halo : halo + 32]
    assert torch.allclose(core, whole[..., r0 : r0 + 32, c0 : c0 + 32], rtol=0, atol=1e-10)


def test_build_rejects_bad_spec() -> None:
    with pytest.raises(ConfigError, match=r"model\.arch='vit' is unknown; use one of unet, resunet"):
        networks.build(dataclasses.replace(small_spec(), arch="vit"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"model\.depth=0"):
        networks.build(dataclasses.replace(small_spec(), depth=0))


# ----------------------------------------------------------------------------- bundles


def small_bundle(**kw: object) -> model.Bundle:
    args: dict[str, object] = {
        "bands": ["red", "green", "blue"],
        "classes": CLASSES,
        "spec": small_spec("attention-unet", depth=2),
        "normalization": Normalization(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), scale=1 / 255),
    }
    args.update(kw)
    return networks.init_bundle(**args)  # type: ignore[arg-type]


def test_init_bundle_defaults() -> None:
    b = networks.init_bundle(bands=["B1", "B2"], classes=CLASSES)
    assert b.spec == ModelSpec(in_channels=2, n_classes=2)
    assert (b.receptive_field, b.halo, b.tile, b.stride) == (107, 112, 480, 16)
    assert b.normalization == Normalization(mean=(0.0, 0.0), std=(1.0, 1.0))
    assert b.provenance["source"] == "random-init" and b.provenance["seed"] == 0
    assert b.class_ids == (0, 1)


def test_init_bundle_is_seeded_and_leaves_global_rng() -> None:
    state = torch.random.get_rng_state()
    a, b, c = small_bundle(seed=1), small_bundle(seed=1), small_bundle(seed=2)
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert not all(np.array_equal(a.weights[k], c.weights[k]) for k in a.weights)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"bands": ["red", "green"]}, "bands=\\['red', 'green'\\] has 2 names but the model has 3 input"),
        ({"bands": ["red", "red", "blue"]}, "must be distinct"),
        ({"classes": (CLASSES[0], ClassInfo(1, "x", "red"))}, "color='red' is not #rrggbb"),
        ({"classes": (CLASSES[0], ClassInfo(255, "x", "#ffffff"))}, "0..254"),
        (
            {"halo": 10},
            "halo=10 must be a multiple of the model's down-sampling factor 4; set --halo / model.halo",
        ),
        ({"tile": 40, "halo": 20}, "tile=40 must be > 2\\*halo=40 .*this model: halo 24.*tile 304"),
        ({"normalization": Normalization(mean=(0, 0, 0), std=(1, 0, 1))}, "must be > 0"),
    ],
)
def test_init_bundle_errors(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        small_bundle(**kw)


def test_bundle_from_module_checks_spec() -> None:
    net = networks.build(small_spec(depth=2))
    with pytest.raises(ConfigError, match="shape"):
        networks.bundle_from_module(
            net,
            spec=small_spec(depth=2, width=8),
            bands=["a", "b", "c"],
            normalization=Normalization((0, 0, 0), (1, 1, 1)),
            classes=CLASSES,
        )


def _forward(bundle: model.Bundle, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out: torch.Tensor = networks.module_from_bundle(bundle)(x)
    return out


def test_bundle_round_trip(tmp_path: Path) -> None:
    b = small_bundle(provenance={"epochs": 3, "metrics": {"miou": 0.5}})
    path = model.save(b, tmp_path / "m.safetensors")
    assert path.exists() and not list(tmp_path.glob(".*partial"))
    loaded = model.load(path)
    for f in (
        "spec",
        "bands",
        "normalization",
        "classes",
        "receptive_field",
        "tile",
        "halo",
        "provenance",
        "name",
    ):
        assert getattr(loaded, f) == getattr(b, f), f
    assert loaded.weights.keys() == b.weights.keys()
    assert all(np.array_equal(loaded.weights[k], b.weights[k]) for k in b.weights)
    x = torch.randn(2, 3, 16, 24)
    assert torch.equal(_forward(loaded, x), _forward(b, x))
    module = networks.module_from_bundle(loaded)
    params = list(module.parameters())
    assert not module.training and params and all(p.dtype == torch.float32 for p in params)
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in params)  # fine-tunable


def test_bundle_half_is_close_and_smaller(tmp_path: Path) -> None:
    b = small_bundle()
    full = model.save(b, tmp_path / "full.safetensors")
    half = model.save(b, tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.7 * full.stat().st_size
    loaded = model.load(half)
    assert {w.dtype for w in loaded.weights.values() if w.dtype.kind == "f"} == {np.dtype(np.float16)}
    assert model.read_metadata(half)["geounet:weights_dtype"] == "float16"
    x = torch.randn(1, 3, 16, 16)
    p_half = torch.softmax(_forward(loaded, x), 1)
    p_full = torch.softmax(_forward(b, x), 1)
    assert torch.allclose(p_half, p_full, atol=1e-2)


def test_metadata_follows_mlm(tmp_path: Path) -> None:
    b = small_bundle()
    meta = model.read_metadata(model.save(b, tmp_path / "m.safetensors"))
    assert meta["mlm:framework"] == "pytorch"
    assert meta["mlm:architecture"] == "Attention U-Net"
    assert meta["mlm:input"][0]["bands"] == ["red", "green", "blue"]
    assert meta["mlm:output"][0]["classification:classes"][1] == {
        "value": 1,
        "name": "crack",
        "color_hint": "FF0000",
    }
    scaling = meta["mlm:input"][0]["value_scaling"][0]
    assert scaling["type"] == "z-score"
    assert scaling["mean"] == pytest.approx(0.4 * 255) and scaling["stddev"] == pytest.approx(0.2 * 255)
    assert meta["mlm:hyperparameters"]["depth"] == 2
    assert meta["geounet:receptive_field"] == 23 and meta["geounet:halo"] == 24
    assert len(meta["geounet:weights_sha256"]) == 64
    for key in ("created", "geounet_version", "torch_version", "git_commit"):
        assert key in meta["geounet:provenance"]


def test_load_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = model.save(small_bundle(), tmp_path / "m.safetensors")

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickling during bundle load")

    class NoUnpickler:
        def __init__(self, *args: object, **kwargs: object) -> None:
            boom()

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    monkeypatch.setattr(torch, "load", boom)
    bundle = model.load(path)
    networks.module_from_bundle(bundle)


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist; check the path") as exc:
        model.load(tmp_path / "nope.safetensors")
    assert "nope.safetensors" in _one_line(exc)


@pytest.mark.parametrize("keep", [0, 4, 20, 0.5, -1])
def test_load_truncated(tmp_path: Path, keep: float) -> None:
    data = model.save(small_bundle(), tmp_path / "m.safetensors").read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) - 1)
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:n])
    with pytest.raises(BundleError, match="truncated") as exc:
        model.load(path)
    assert "cut.safetensors" in _one_line(exc)


def test_load_tampered_weights(tmp_path: Path) -> None:
    data = bytearray(model.save(small_bundle(), tmp_path / "m.safetensors").read_bytes())
    data[-10] ^= 0x01
    path = tmp_path / "m.safetensors"
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="fails its weights checksum") as exc:
        model.load(path)
    _one_line(exc)


@pytest.mark.parametrize("kind", ["torch", "pickle"])
def test_load_pickle_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "weights.safetensors"
    state = networks.build(small_spec()).state_dict()
    if kind == "torch":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps({k: v.numpy() for k, v in state.items()}, protocol=2))
    with pytest.raises(BundleError, match="is not a geounet bundle \\(safetensors\\); re-export it") as exc:
        model.load(path)
    _one_line(exc)


def _rewrite(path: Path, edit: object) -> Path:
    """Re-save a bundle file's tensors with edited metadata (weights untouched: checksum still valid)."""
    data = path.read_bytes()
    tensors = safetensors.numpy.load(data)
    meta = model.read_metadata(path)
    out = path.with_name("edited.safetensors")
    new_meta: dict[str, str] | None = edit(meta) if callable(edit) else edit  # type: ignore[assignment]
    out.write_bytes(safetensors.numpy.save(tensors, metadata=new_meta))
    return out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (None, "without geounet metadata"),
        ({"geounet": "{not json"}, "invalid geounet metadata \\(not JSON\\)"),
        ({"geounet": json.dumps({"format": "other"})}, "not a geounet-bundle document"),
        (lambda m: {"geounet": json.dumps({**m, "format_version": 99})}, "format_version=99"),
        (
            lambda m: {"geounet": json.dumps({k: v for k, v in m.items() if k != "mlm:hyperparameters"})},
            "invalid geounet metadata \\(KeyError",
        ),
        (
            lambda m: {
                "geounet": json.dumps({**m, "mlm:input": [{**m["mlm:input"][0], "bands": ["a", "b"]}]})
            },
            "inconsistent: bands=\\['a', 'b'\\] has 2 names",
        ),
        (
            lambda m: {
                "geounet": json.dumps({**m, "mlm:hyperparameters": {**m["mlm:hyperparameters"], "width": 8}})
            },
            "inconsistent: tensor .* has shape",
        ),
        (
            lambda m: {"geounet": json.dumps({**m, "geounet:weights_sha256": "0" * 64})},
            "fails its weights checksum",
        ),
    ],
)
def test_load_bad_metadata(tmp_path: Path, edit: object, message: str) -> None:
    path = model.save(small_bundle(), tmp_path / "m.safetensors")
    with pytest.raises(BundleError, match=message) as exc:
        model.load(_rewrite(path, edit))
    assert "edited.safetensors" in _one_line(exc)


def test_save_is_atomic_over_existing(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    model.save(small_bundle(seed=1), path)
    model.save(small_bundle(seed=2), path)
    assert model.load(path).provenance["seed"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 5),
    scale=st.floats(1e-3, 10),
    data=st.data(),
)
def test_normalize_inverts(n: int, scale: float, data: st.DataObject) -> None:
    mean = tuple(data.draw(st.floats(-100, 100)) for _ in range(n))
    std = tuple(data.draw(st.floats(0.1, 100)) for _ in range(n))
    norm = Normalization(mean=mean, std=std, scale=scale)
    x = np.random.default_rng(n).uniform(0, 1000, size=(2, n, 3, 4)).astype(np.float32)
    y = model.normalize(x, norm)
    assert y.dtype == np.float32 and y.shape == x.shape
    back = (
        y * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]
    ) / scale
    np.testing.assert_allclose(back, x, rtol=1e-4, atol=1e-2)


def test_normalize_rejects_wrong_bands() -> None:
    with pytest.raises(ValueError, match="no band axis of length 3"):
        model.normalize(np.zeros((2, 4, 4), np.float32), Normalization((0, 0, 0), (1, 1, 1)))


def test_provenance_with_paths_and_dates_saves(tmp_path: Path) -> None:
    import datetime

    when = datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)
    b = small_bundle(provenance={"data": tmp_path / "train", "finished": when, "epochs": 5})
    prov = model.load(model.save(b, tmp_path / "m.safetensors")).provenance
    assert prov["data"] == str(tmp_path / "train") and prov["finished"] == str(when) and prov["epochs"] == 5


def test_load_corrupt_header_and_folder(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": "x"}}).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    with pytest.raises(BundleError, match="corrupt safetensors header"):
        model.load(path)
    with pytest.raises(BundleError, match="is a folder"):
        model.load(tmp_path)
