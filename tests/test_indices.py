"""Spectral indices as model inputs: the math, the torch layer, the bundle file, inference = training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geounet import evaluate, infer, model, stream
from geounet.errors import ConfigError
from geounet.model import ClassInfo, ModelSpec, Normalization, networks
from geounet.model.indices import SPECTRAL_INDICES, index_pairs, normalized_difference

BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")
CLASSES = (ClassInfo(0, "land", "#00ff00"), ClassInfo(1, "water", "#0000ff"), ClassInfo(2, "town", "#ff0000"))
NORM = Normalization(
    mean=(0.10, 0.09, 0.08, 0.25, 0.18, 0.12), std=(0.03, 0.03, 0.04, 0.08, 0.06, 0.05), scale=1e-4
)
ALL = tuple(SPECTRAL_INDICES)


def spec(arch: str = "unet", indices: tuple[str, ...] = ALL) -> ModelSpec:
    return ModelSpec(len(BANDS), len(CLASSES), arch, depth=2, width=4, indices=index_pairs(indices, BANDS))  # type: ignore[arg-type]


def bundle(arch: str = "unet", seed: int = 0) -> model.Bundle:
    return networks.init_bundle(bands=BANDS, classes=CLASSES, spec=spec(arch), normalization=NORM, seed=seed)


def test_normalized_difference_matches_hand_computed_values() -> None:
    """NDVI of a green leaf, bare soil and open water, worked out by hand; dark pixels give 0."""
    nir = np.array([0.45, 0.30, 0.02, 0.0, 0.0003])
    red = np.array([0.05, 0.20, 0.06, 0.0, 0.0])
    # (0.45-0.05)/0.50 = 0.8; 0.10/0.50 = 0.2; -0.04/0.08 = -0.5; 0/0 -> 0; 0.0003/0.0003 = 1
    np.testing.assert_allclose(normalized_difference(nir, red), [0.8, 0.2, -0.5, 0.0, 1.0])
    # below EPS the ratio is not computed (nodata zeros, rounding noise)
    assert normalized_difference(np.array([1e-7]), np.array([0.0]))[0] == 0.0


def test_index_pairs_name_the_bands_of_each_index() -> None:
    assert index_pairs(["ndvi", "ndwi", "mndwi", "ndmi", "nbr"], BANDS) == (
        (3, 2),
        (1, 3),
        (1, 4),
        (3, 4),
        (3, 5),
    )
    assert index_pairs([], BANDS) == ()


@pytest.mark.parametrize(
    ("names", "bands", "says"),
    [
        (["evi"], BANDS, "'evi' is not a known spectral index"),
        (["ndvi", "ndvi"], BANDS, "repeats an index"),
        (["nbr"], ("red", "nir"), "has no ['swir22']"),
    ],
)
def test_index_pairs_reject_bad_names_with_the_recipe_key(
    names: list[str], bands: tuple[str, ...], says: str
) -> None:
    with pytest.raises(ConfigError, match=r"model\.indices") as err:
        index_pairs(names, bands)
    assert says in str(err.value)


def test_spec_rejects_pairs_outside_the_bands() -> None:
    bad = ModelSpec(3, 2, depth=1, width=4, indices=((0, 3),))
    with pytest.raises(ConfigError, match=r"band positions in 0\.\.2"):
        networks.build(bad)


@settings(max_examples=25, deadline=None)
@given(
    raw=st.lists(st.integers(0, 12000), min_size=len(BANDS) * 4, max_size=len(BANDS) * 4),
)
def test_layer_computes_the_oracle_from_normalized_input(raw: list[int]) -> None:
    """The network's first layer sees reflectance again and computes what the numpy oracle does."""
    dn = np.asarray(raw, dtype=np.uint16).reshape(1, len(BANDS), 2, 2)
    net = networks.module_from_bundle(bundle())
    with torch.inference_mode():
        layer = next(m for m in net.modules() if isinstance(m, networks.SpectralIndices))
        out = layer(torch.from_numpy(model.normalize(dn, NORM))).numpy()
    refl = dn.astype(np.float64) * NORM.scale
    assert out.shape == (1, len(BANDS) + len(ALL), 2, 2)
    np.testing.assert_allclose(out[:, : len(BANDS)], model.normalize(dn, NORM))
    for k, (a, b) in enumerate(index_pairs(ALL, BANDS)):
        np.testing.assert_allclose(
            out[0, len(BANDS) + k], normalized_difference(refl[0, a], refl[0, b]), atol=2e-5
        )


@pytest.mark.parametrize("arch", ["unet", "resunet", "attention-unet"])
def test_state_shapes_are_the_networks_with_indices(arch: str) -> None:
    s = spec(arch)
    built = {k: tuple(v.shape) for k, v in networks.build(s).state_dict().items()}
    assert model.state_shapes(s) == built
    assert built["encoder.0.0.mean"] == (len(BANDS),)


def test_bundle_round_trip_keeps_indices_and_outputs(tmp_path: Path) -> None:
    b = bundle(seed=3)
    path = model.save(b, tmp_path / "m.safetensors")
    back = model.load(path)
    assert back.spec == b.spec and back.spec.indices == index_pairs(ALL, BANDS)
    assert model.read_metadata(path)["mlm:hyperparameters"]["indices"] == [list(p) for p in b.spec.indices]
    np.testing.assert_array_equal(back.weights["encoder.0.0.mean"], np.asarray(NORM.mean, np.float32))
    x = torch.from_numpy(model.normalize(np.full((1, len(BANDS), 8, 8), 900, np.uint16), NORM))
    with torch.inference_mode():
        assert torch.equal(networks.module_from_bundle(b)(x), networks.module_from_bundle(back)(x))


def test_bundles_without_indices_keep_their_metadata() -> None:
    plain = networks.init_bundle(
        bands=BANDS, classes=CLASSES, spec=ModelSpec(len(BANDS), 3, depth=1, width=4)
    )
    assert "indices" not in model.to_metadata(plain)["mlm:hyperparameters"]
    assert "encoder.0.0.mean" not in plain.weights


def test_bundle_refuses_statistics_that_are_not_its_normalization() -> None:
    """A network built from scratch must get the bundle's statistics (train.py sets them)."""
    net = networks.build(spec())  # buffers still mean 0, std 1
    with pytest.raises(ConfigError, match="set_band_statistics"):
        networks.bundle_from_module(net, spec=spec(), bands=BANDS, normalization=NORM, classes=CLASSES)
    networks.set_band_statistics(net, NORM)
    assert networks.bundle_from_module(
        net, spec=spec(), bands=BANDS, normalization=NORM, classes=CLASSES
    ).spec.indices


@pytest.mark.parametrize("arch", ["unet", "resunet"])
def test_production_tiler_and_streamed_strips_equal_the_training_input_path(arch: str) -> None:
    """Training feeds the network ``normalize(image)``; the tiler, and streamed strips, give the same classes."""
    b = bundle(arch, seed=1)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 6000, (len(BANDS), 96, 120)).astype(np.uint16)
    net = networks.module_from_bundle(b)
    with torch.inference_mode():
        logits = net(torch.from_numpy(model.normalize(image[None], NORM)))
        strips = torch.cat(
            list(
                stream.StreamingUNet(net).strips(
                    torch.from_numpy(model.normalize(image[None], NORM)), rows=16
                )
            ),
            dim=2,
        )
    torch.testing.assert_close(strips, logits, atol=1e-5, rtol=1e-5)
    trained = logits.argmax(1)[0].numpy().astype(np.uint8)
    tiled = evaluate.predict_image(infer.Predictor(b, device="cpu", batch_size=1), image, core=32)
    assert (tiled == trained).mean() > 0.999  # float rounding of fused BatchNorm may flip a near-tie
