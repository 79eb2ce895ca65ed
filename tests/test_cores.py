"""The model leaves a core to work beside it (geounet.cores), without changing a pixel."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from geounet import cores, infer
from geounet.model import ClassInfo, ModelSpec, networks


@pytest.fixture(scope="module")
def predictor() -> infer.Predictor:
    spec = ModelSpec(in_channels=3, n_classes=3, depth=2, width=8)
    classes = [ClassInfo(i, f"c{i}", "#000000") for i in range(3)]
    return infer.Predictor(
        networks.init_bundle(bands=["r", "g", "b"], classes=classes, spec=spec, seed=3), device="cpu"
    )


@pytest.fixture
def two_threads() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_busy_threads_are_counted_per_block_and_released_on_error() -> None:
    share = cores.CoreShare()
    with share.beside(), share.beside():
        assert share.model_threads(4) == 2 and share.model_threads(2) == 1
    with pytest.raises(KeyError), share.beside():
        raise KeyError("vectorizing failed")
    assert share.model_threads(4) == 4


@pytest.mark.usefixtures("two_threads")
def test_the_model_takes_one_core_less_while_a_thread_works_beside_it(predictor: infer.Predictor) -> None:
    """Each streamed strip asks the share; the caller's thread count comes back at the end; the
    probabilities are bit-identical to those of a run with nothing beside it."""
    x = np.random.default_rng(0).normal(size=(3, 64, 48)).astype(np.float32)
    alone = [p for _, p in predictor.predict_rows(x, rows=16)]
    seen = []
    started, stop = threading.Event(), threading.Event()

    def beside() -> None:
        with cores.SHARE.beside():
            started.set()
            stop.wait(30)

    worker = threading.Thread(target=beside)
    worker.start()
    started.wait(30)
    try:
        shared = []
        for _, p in predictor.predict_rows(x, rows=16):
            seen.append(torch.get_num_threads())
            shared.append(p)
    finally:
        stop.set()
        worker.join()
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2
    assert all(np.array_equal(a, b) for a, b in zip(alone, shared, strict=True))


@pytest.mark.usefixtures("two_threads")
def test_an_abandoned_stream_gives_the_threads_back(predictor: infer.Predictor) -> None:
    x = np.zeros((3, 64, 48), np.float32)
    with cores.SHARE.beside():
        rows = predictor.predict_rows(x, rows=16)
        next(rows)
        assert torch.get_num_threads() == 1
        rows.close()  # type: ignore[attr-defined]  # a generator, typed as an Iterator
    assert torch.get_num_threads() == 2
