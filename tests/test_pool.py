"""The Ray executor's pure bookkeeping (no Ray): the batch queue's backpressure, balance and retries.

``plan_pool`` is tested beside the executor in ``tests/test_distributed.py``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geounet.errors import ExecutionError
from geounet.pool import Batch, BatchDone, BatchQueue, RayStats
from geounet.tiling import Tile, grid


def _tiles(n: int) -> list[Tile]:
    return list(grid((16, 16 * n), tile=16, halo=0)) if n else []


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 30),
    batch_size=st.integers(1, 4),
    actors=st.integers(1, 4),
    per_actor=st.integers(1, 3),
    losses=st.lists(st.booleans(), max_size=80),
)
def test_every_tile_comes_back_once_within_the_in_flight_limit(
    n: int, batch_size: int, actors: int, per_actor: int, losses: list[bool]
) -> None:
    queue = BatchQueue(
        _tiles(n), batch_size=batch_size, actors=actors, queue_per_actor=per_actor, max_retries=3
    )
    refs = iter(range(10**6))
    done: list[int] = []
    lost = iter(losses)

    def submit(batch: Batch) -> int:
        others = [load for a, load in enumerate(queue.load) if a != batch.actor]
        assert queue.load[batch.actor] - 1 <= min(others, default=10**6)  # it went to a least loaded actor
        return next(refs)

    while queue:
        queue.fill(submit)
        assert 0 < len(queue.inflight) <= actors * per_actor
        batch = queue.finish(next(iter(queue.inflight)))
        if next(lost, False) and batch.attempt < 3:
            queue.lost(batch, RuntimeError("node lost"), actor_died=False)
        else:
            done += [t.index for t in batch.tiles]
    assert sorted(done) == list(range(n))
    assert queue.load == [0] * actors


def test_batches_go_to_the_least_loaded_actor_and_skip_a_dead_one() -> None:
    queue = BatchQueue(_tiles(8), batch_size=1, actors=2, queue_per_actor=2)
    queue.fill(lambda batch: batch.tiles[0].index)
    assert [b.actor for b in queue.inflight.values()] == [0, 1, 0, 1]
    queue.lost(queue.finish(0), RuntimeError("ActorDiedError: gone"), actor_died=True)
    assert queue.alive == [1]
    queue.fill(lambda batch: 100 + batch.tiles[0].index)
    assert queue.inflight[100].actor == 1 and queue.inflight[100].attempt == 1  # the lost batch first
    with pytest.raises(ExecutionError, match="every predict actor died"):
        queue.lost(queue.finish(1), RuntimeError("gone too"), actor_died=True)


def test_a_batch_fails_the_job_after_max_retries() -> None:
    queue = BatchQueue(_tiles(3), batch_size=3, actors=1, queue_per_actor=1, max_retries=1)
    queue.fill(lambda batch: "a")
    queue.lost(queue.finish("a"), RuntimeError("worker crashed"), actor_died=False)
    queue.fill(lambda batch: "b")
    with pytest.raises(
        ExecutionError, match=r"tiles 0\.\.2 failed 2 times \(worker crashed\); rerun to resume"
    ):
        queue.lost(queue.finish("b"), RuntimeError("worker crashed"), actor_died=False)


def test_stats_count_predictions_and_parts_per_node() -> None:
    stats = RayStats()
    stats.count("n1", 7, 1.5, 4)
    stats.count_parts(BatchDone(predict_node="n1", pid=8, node="n2", cpu_s=0.5, tiles=2))
    assert stats.tiles_per_node == {"n1": 6} and stats.parts_per_node == {"n2": 2}
    assert stats.pids == {7, 8} and stats.worker_cpu_s == 2.0
