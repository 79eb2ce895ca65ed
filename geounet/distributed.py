"""Ray executors (the only module that imports ``ray``).

Each section is one executor; the stages they run are plain functions from other modules,
passed in, so nothing else depends on Ray.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from geounet import parts, planning, predict, rasters
from geounet.errors import ExecutionError, GeounetError, first_line
from geounet.pool import (
    BatchDone,
    BatchQueue,
    PoolPlan,
    RayOptions,
    RayStats,
    actor_cause,
    describe_nodes,
    local_system_config,
    plan_pool,
)

if TYPE_CHECKING:
    from geounet.jobs import Job, TileResult
    from geounet.model import ClassInfo
    from geounet.read import Chip
    from geounet.resume import TileStore
    from geounet.tiling import Tile

log = logging.getLogger(__name__)

# --- Ray Train: data-parallel training (`geounet train --workers N`) -------------------------


def train_data_parallel(
    loop: Callable[[dict[str, Any]], None],
    config: dict[str, Any],
    *,
    workers: int,
    storage: Path,
    cpus_per_worker: float | None = None,
    use_gpu: bool | None = None,
) -> None:
    """Run ``loop(config)`` on ``workers`` Ray Train workers (``TorchTrainer``, DDP process group).

    Ray Train initialises ``torch.distributed`` (gloo on CPU, NCCL on GPU) in every worker; the
    loop reads rank and world size from it. A local Ray is started (and shut down) when none is
    running, with at most 2 CPUs unless the machine has fewer; workers ask for fractional CPUs
    so two of them fit on a 2-core machine.

    Raises:
        ExecutionError: when a worker fails (the worker's error is in the message).
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if workers < 1:
        raise ExecutionError(f"--workers {workers} must be >= 1; use 1 for in-process training")
    from geounet.infer import resolve_device

    gpu = use_gpu if use_gpu is not None else resolve_device("auto").type == "cuda"
    with _local_ray(num_cpus=min(os.cpu_count() or 1, max(2, workers))) as ray:
        cpus = (
            cpus_per_worker
            if cpus_per_worker is not None
            else max(0.1, float(ray.available_resources().get("CPU", 1.0)) / workers * 0.9)
        )
        trainer = TorchTrainer(
            loop,
            train_loop_config=config,
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=gpu, resources_per_worker={"CPU": cpus}
            ),
            run_config=RunConfig(
                name="geounet-train", storage_path=str(storage), failure_config=FailureConfig(max_failures=0)
            ),
        )
        try:
            error = getattr(trainer.fit(), "error", None)
        except Exception as exc:  # Ray wraps worker errors in its own types
            error = exc
        if error is not None:
            raise ExecutionError(
                f"Ray Train with {workers} workers failed: {error}; rerun with --workers 1 -v"
            ) from (error if isinstance(error, BaseException) else None)


@contextlib.contextmanager
def _local_ray(*, num_cpus: int) -> Iterator[Any]:
    """The ``ray`` module, initialised: the running Ray, else a fresh local one (shut down on exit)."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    _init_local(ray, num_cpus=num_cpus)
    try:
        yield ray
    finally:
        ray.shutdown()


def _init_local(ray: Any, *, num_cpus: int | None, **settings: Any) -> None:
    """Start a local Ray for this job; ``address="local"``: never a cluster another process left running."""
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False, **settings)  # fmt: skip


# --- Ray prediction (`geounet predict --executor ray`): read tasks → actor pool → parts -------


class _PredictActor:
    """Ray actor body: loads the bundle once, predicts batches of chips."""

    def __init__(self, job: Job, device: str, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.predictor = predict.TilePredictor(job, device=device)
        self.device = str(self.predictor.predictor.device)

    def info(self) -> dict[str, Any]:
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "device": self.device}

    def predict(
        self, tiles: Sequence[Tile], read: tuple[float, Sequence[Chip | None]]
    ) -> tuple[str, int, float, list[TileResult]]:
        """(node id, pid, CPU seconds of the read and the prediction, results) of one batch."""
        import ray

        t0 = time.process_time()
        results = self.predictor(tiles, read[1])
        cpu = read[0] + time.process_time() - t0
        return ray.get_runtime_context().get_node_id(), os.getpid(), cpu, results


def _predict_parts(
    job: Job, classes: Sequence[ClassInfo], vectors: bool, actor: Any, tiles: Sequence[Tile]
) -> BatchDone:
    """Ray task body: read a batch, have ``actor`` predict it, write its raster and vector parts.

    One task per batch, placed on the actor's node: the driver submits one call and gets back
    one small :class:`BatchDone`; the chips and predictions only travel between this task and the
    actor. Ray releases this task's CPU while it waits for the actor.
    """
    import ray

    t0 = time.process_time()
    read = predict.read_chips_timed(job, tiles)
    predict_node, pid, cpu, results = ray.get(actor.predict.remote(tiles, read))
    node = ray.get_runtime_context().get_node_id()
    parts.write_tiles(job, results, classes=classes, node=node, vectors=vectors)
    return BatchDone(predict_node, pid, node, cpu + time.process_time() - t0, len(results))


def _adopt_cached(job: Job, store: TileStore, classes: Sequence[ClassInfo], vectors: bool) -> BatchDone:
    """Ray task body: tiles a previous run cached in ``store`` (npz) → parts, without predicting."""
    import ray

    t0 = time.process_time()
    node = ray.get_runtime_context().get_node_id()
    todo = set(store.done) - parts.complete(parts.folder_of(job), store.done)
    cached = (r for r in store.cached() if r.tile.index in todo)
    infos = parts.write_tiles(job, cached, classes=classes, node=node, vectors=vectors)
    return BatchDone(node, os.getpid(), node, time.process_time() - t0, len(infos))


def _assemble(job: Job, classes: Sequence[ClassInfo], vectors: bool) -> tuple[dict[str, Any], str, float]:
    """Ray task body: the final COGs and polygon layer from the parts (counts, node id, CPU seconds)."""
    import ray

    t0 = time.process_time()
    counts = parts.assemble(job, classes=classes, vectors=vectors)
    return counts, ray.get_runtime_context().get_node_id(), time.process_time() - t0


class RayExecutor:
    """Execute a job's stages on Ray; use as ``pipeline.run(job, results=RayExecutor())``.

    Reads are Ray tasks (one per batch of tiles, ``cpus_per_read`` each, retried); predictions run
    in a pool of actors that each load the bundle once (restarted when they crash, their tasks
    retried). The driver keeps at most ``actors × queue_per_actor`` batches in flight, so memory
    stays flat however large the raster. Batches lost with a node or an actor are resubmitted.

    :meth:`produce` (what :func:`geounet.pipeline.run` calls) keeps the pixels on the workers:
    a Ray task beside each actor writes the batch's raster and vector parts
    (:mod:`geounet.parts`) and a final Ray task assembles the products, so the driver only
    coordinates. Calling the executor instead yields :class:`TileResult` values to the driver
    (``merge=blend`` needs that: its blending crosses tiles).
    """

    def __init__(self, options: RayOptions | None = None) -> None:
        self.options = options or RayOptions()
        self.stats = RayStats()

    def __call__(self, job: Job, *, tiles: Iterable[Tile] | None = None) -> Iterator[TileResult]:
        """Yield one :class:`TileResult` per tile (the whole plan when ``tiles`` is None)."""
        todo = list(job.plan if tiles is None else tiles)
        if not todo:
            return
        with self._pool(job) as ray_pool:
            if ray_pool is None:
                yield from predict.local_results(job, tiles=todo)
                return
            import ray

            job_ref, actors, pool = ray_pool
            read: Any = ray.remote(predict.read_chips_timed).options(
                num_cpus=pool.cpus_per_read, max_retries=self.options.max_retries
            )

            def submit(batch: list[Tile], actor: int) -> Any:
                return actors[actor].predict.remote(batch, read.remote(job_ref, batch))

            for node, pid, cpu, results in self._stream(
                todo, actors, submit, batch_size=job.options.batch_size
            ):
                self.stats.count(node, pid, cpu, len(results))
                yield from results

    def produce(
        self, job: Job, *, tiles: Sequence[Tile], store: TileStore, progress: bool | None = None
    ) -> dict[str, Any]:
        """Predict ``tiles`` into parts on the workers and assemble the rasters and polygons there.

        The parts executor of :func:`geounet.pipeline.run`. Tiles whose parts a previous run
        completed are reused, tiles the run cache (``store``) holds from another executor are
        turned into parts without predicting, and ``store.reused`` counts both. Returns the
        counts of :func:`geounet.rasters.write_rasters` plus ``vectors`` (the polygon layer's
        path) when the polygons could be finished per tile (see :func:`parts.vectors_per_tile`).
        ``merge=blend`` (and a local fallback) take the driver path: results stream to
        :func:`geounet.rasters.write_rasters`.
        """
        if job.options.merge != "crop":
            return self._write_stream(job, self(job, tiles=tiles), store)
        folder = parts.folder_of(job)
        reused = parts.complete(folder, range(len(job.plan)))
        todo = [t for t in tiles if t.index not in reused]
        store.reused = len(reused | set(store.done))
        if reused:
            log.info("resuming: reusing %d of %d tiles from %s", store.reused, len(job.plan), folder)
        classes = tuple(planning.load_bundle(job.model_path).classes)
        vectors = parts.vectors_per_tile(job.options.simplify, job.grid)
        with self._pool(job) as ray_pool:
            if ray_pool is None:
                return self._write_stream(job, predict.local_results(job, tiles=tiles), store)
            import ray

            job_ref, actors, pool = ray_pool
            if set(store.done) - reused:
                self._wait(ray.remote(_adopt_cached).options(num_cpus=pool.cpus_per_read).remote(
                    job_ref, store, classes, vectors))  # fmt: skip
            self._write_parts(ray_pool, todo, classes, vectors, batch_size=job.options.batch_size)
            for actor in actors:  # free their CPUs for the assembly
                ray.kill(actor, no_restart=True)
            task: Any = ray.remote(_assemble).options(
                num_cpus=min(1.0, max(n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive"))),
                max_retries=self.options.max_retries,
            )
            counts, node, cpu = self._wait(task.remote(job_ref, classes, vectors))
            self.stats.assembled_on = node
            self.stats.worker_cpu_s += cpu
            return dict(counts)

    def _write_parts(
        self,
        ray_pool: tuple[Any, list[Any], PoolPlan],
        todo: list[Tile],
        classes: Sequence[ClassInfo],
        vectors: bool,
        *,
        batch_size: int,
    ) -> None:
        """Read → predict → write parts for every batch of ``todo``; the driver sees only :class:`BatchDone`."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        job_ref, actors, pool = ray_pool
        task: Any = ray.remote(_predict_parts)
        classes_ref = ray.put(tuple(classes))
        # One task shape per actor, beside it (soft: a restarted actor may live elsewhere).
        tasks = [
            task.options(
                num_cpus=pool.cpus_per_read,
                max_retries=self.options.max_retries,
                scheduling_strategy=NodeAffinitySchedulingStrategy(info["node_id"], soft=True),
            )
            for info in self.stats.actors
        ]

        handles = [ray.put(a) for a in actors]  # a ref per handle: cheaper to pass than the handle

        def submit(batch: list[Tile], actor: int) -> Any:
            return tasks[actor].remote(job_ref, classes_ref, vectors, handles[actor], batch)

        total, step, finished = len(todo), max(len(todo) // 10, 1), 0
        for done in self._stream(todo, actors, submit, batch_size=batch_size):
            self.stats.count_parts(done)
            finished += done.tiles
            if finished // step != (finished - done.tiles) // step or finished == total:
                log.info("predict: %d/%d tiles written as parts", finished, total)

    @staticmethod
    def _write_stream(job: Job, results: Iterator[TileResult], store: TileStore) -> dict[str, Any]:
        """The driver path: cached tiles, then ``results`` (recorded as they pass) into the writer."""
        stream = predict.resumed(store, results)
        try:
            return dict(rasters.write_rasters(job, stream))
        finally:
            stream.close()  # stops the actors even when writing failed

    @contextlib.contextmanager
    def _pool(self, job: Job) -> Iterator[tuple[Any, list[Any], PoolPlan] | None]:
        """Connect, plan and start the actor pool: (job ref, actors, plan); None to run in-process.

        None only when no address is given, a local Ray cannot start and ``fallback`` allows it.
        The actors are killed and a Ray this call started is shut down on exit.
        """
        self.stats = RayStats()
        try:
            started = self._connect()
        except ExecutionError as exc:
            if self.options.address or os.environ.get("RAY_ADDRESS") or not self.options.fallback:
                raise
            log.warning("%s; running with --executor local instead", exc)
            self.stats.fell_back = True
            yield None
            return
        import ray

        actors: list[Any] = []
        try:
            nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
            pool = plan_pool(nodes, device=job.options.device, options=self.options)
            self.stats.pool = pool
            job_ref = ray.put(job)  # tasks share one copy
            self._start_actors(job, pool, actors)
            yield job_ref, actors, pool
        finally:
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
            if started:
                ray.shutdown()

    def _wait(self, ref: Any) -> Any:
        """``ray.get`` of a one-off task; its GeounetError surfaces as itself."""
        import ray
        from ray.exceptions import RayError, RayTaskError

        try:
            return ray.get(ref)
        except RayTaskError as exc:
            _raise_task_error(exc, "rerun (finished tiles are reused)")
        except RayError as exc:
            raise ExecutionError(
                f"a Ray task was lost: {first_line(exc)}; rerun (finished tiles are reused)"
            ) from exc

    def _connect(self) -> bool:
        """Join ``address``/``$RAY_ADDRESS`` or start a local Ray; True when this call started it."""
        try:
            import ray
        except ImportError as exc:
            raise ExecutionError(f"Ray is not installed ({exc}); pip install 'ray[default]'") from exc
        if ray.is_initialized():
            return False
        address = self.options.address or os.environ.get("RAY_ADDRESS")
        store_mb = self.options.object_store_mb
        try:
            if address:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            else:
                # num_cpus None: Ray counts the CPUs itself (it honours container CPU limits).
                ncpu = self.options.num_cpus or len(os.sched_getaffinity(0))
                _init_local(ray, num_cpus=self.options.num_cpus, object_store_memory=store_mb and store_mb * 2**20,
                            _system_config=local_system_config(ncpu))  # fmt: skip
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
            where = f"join the Ray cluster at {address!r}" if address else "start a local Ray"
            raise ExecutionError(
                f"cannot {where} ({first_line(exc)}); check --address/RAY_ADDRESS or use --executor local"
            ) from exc
        return True

    def _start_actors(self, job: Job, pool: PoolPlan, actors: list[Any]) -> None:
        """Start the pool's actors into ``actors`` (the caller kills them) and wait until they are ready."""
        import ray

        cls: Any = ray.remote(_PredictActor).options(
            num_cpus=pool.cpus_per_actor,
            num_gpus=pool.gpus_per_actor,
            resources=dict(pool.resources) or None,
            max_restarts=self.options.max_restarts,
            max_task_retries=self.options.max_retries,
            scheduling_strategy="SPREAD",
        )
        # The job goes by value (it is small): a restarted actor must not depend on an object
        # that could be lost with a node.
        actors.extend(cls.remote(job, pool.device, pool.threads) for _ in range(pool.actors))
        infos = [a.info.remote() for a in actors]
        ready, pending = ray.wait(infos, num_returns=len(infos), timeout=self.options.ready_timeout_s)
        try:
            self.stats.actors = ray.get(ready if pending else infos)  # in actor order once all started
        except ray.exceptions.RayActorError as exc:
            raise ExecutionError(
                f"a predict actor failed to start: {actor_cause(exc)}; rerun with --executor local -v"
            ) from exc
        if pending:
            raise ExecutionError(
                f"only {len(ready)} of {len(actors)} predict actors started within "
                f"{self.options.ready_timeout_s:g} s (each asks {pool.actor_request}; available: "
                f"{describe_nodes([ray.available_resources()])}); lower --actors or --gpus-per-actor"
            )
        log.info(
            "ray: %d actor(s) on %s, %g CPU / %g GPU each, on %d node(s)",
            len(actors),
            pool.device,
            pool.cpus_per_actor,
            pool.gpus_per_actor,
            len({i["node_id"] for i in self.stats.actors}),
        )

    def _stream(
        self,
        tiles: list[Tile],
        actors: list[Any],
        submit: Callable[[list[Tile], Any], Any],
        *,
        batch_size: int,
    ) -> Iterator[Any]:
        """Submit the batches of ``tiles`` (``submit(batch, actor index)`` → ref) with backpressure; yield their values.

        Batches lost with an actor, a worker or a node are resubmitted (``max_retries`` times,
        :class:`geounet.pool.BatchQueue`); a task's :class:`GeounetError` (a read or model
        error) surfaces as itself.
        """
        import ray
        from ray.exceptions import (
            ActorDiedError,
            GetTimeoutError,
            ObjectLostError,
            OwnerDiedError,
            RayActorError,
            RayTaskError,
            WorkerCrashedError,
        )

        timeout = self.options.stall_timeout_s
        queue = BatchQueue(tiles, batch_size=batch_size, actors=len(actors),
                           queue_per_actor=self.options.queue_per_actor, max_retries=self.options.max_retries)  # fmt: skip
        while queue:
            queue.fill(lambda batch: submit(batch.tiles, batch.actor))
            # fetch_local=False: the driver waits for the (small) result, never pulls it early
            ready, _ = ray.wait(list(queue.inflight), num_returns=1, timeout=timeout, fetch_local=False)
            if not ready:
                raise ExecutionError(
                    f"no batch finished in {timeout:g} s ({len(queue.inflight)} in flight; "
                    f"available: {describe_nodes([ray.available_resources()])}); check the cluster "
                    "(`ray status`) or rerun with --executor local"
                )
            for ref in ready:
                batch = queue.finish(ref)
                try:
                    value = ray.get(ref, timeout=timeout)
                except (RayActorError, ObjectLostError, OwnerDiedError, WorkerCrashedError) as exc:
                    # before RayTaskError: a task downstream of a dead actor raises both types
                    queue.lost(batch, exc, actor_died=isinstance(exc, ActorDiedError))
                    self.stats.resubmitted += 1
                    continue
                except RayTaskError as exc:
                    _raise_task_error(exc, "rerun with --executor local -v")
                except GetTimeoutError as exc:
                    raise ExecutionError(
                        f"a finished batch could not be fetched in {timeout:g} s "
                        f"({first_line(exc)}); check the cluster (`ray status`)"
                    ) from exc
                yield value


def _raise_task_error(exc: BaseException, hint: str) -> NoReturn:
    """A failed Ray task: its :class:`GeounetError` (a read or model error) as itself, else an ExecutionError."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, GeounetError):
        raise cause from None  # its message says what to fix
    raise ExecutionError(f"a Ray task failed: {first_line(exc)}; {hint}") from exc
