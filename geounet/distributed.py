"""Ray executors (the only module that imports ``ray``).

Each section is one executor; the stages they run are plain functions from other modules,
passed in, so nothing else depends on Ray.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geounet import parts
from geounet.errors import ConfigError, ExecutionError, GeounetError, first_line

if TYPE_CHECKING:
    from geounet.jobs import Job, TileResult
    from geounet.model import ClassInfo
    from geounet.read import Chip
    from geounet.resume import TileStore
    from geounet.tiling import Tile

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Ray Train: data-parallel training (`geounet train --workers N`)
# ---------------------------------------------------------------------------------------------


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
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if workers < 1:
        raise ExecutionError(f"--workers {workers} must be >= 1; use 1 for in-process training")
    gpu = use_gpu if use_gpu is not None else _has_cuda()
    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ncpu = min(os.cpu_count() or 1, max(2, workers))
        # address="local": always a fresh local Ray, never a cluster another process left running
        ray.init(
            address="local",
            num_cpus=ncpu,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        started = True
    try:
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
            result = trainer.fit()
        except Exception as exc:  # Ray wraps worker errors in its own types
            raise ExecutionError(
                f"Ray Train with {workers} workers failed: {exc}; rerun with --workers 1 -v"
            ) from exc
        if getattr(result, "error", None) is not None:
            raise ExecutionError(
                f"Ray Train with {workers} workers failed: {result.error}; rerun with --workers 1 -v"
            )
    finally:
        if started:
            ray.shutdown()


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


# ---------------------------------------------------------------------------------------------
# Ray prediction: read tasks → U-Net actor pool → the driver's streaming writer
# (`geounet predict --executor ray`)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RayOptions:
    """How :class:`RayExecutor` uses Ray; ``None`` means "size it from the cluster".

    Attributes:
        address: a cluster to join (``ray://…`` or ``host:port``); default ``$RAY_ADDRESS``,
            else a local Ray is started (and stopped) for the job.
        num_cpus: CPUs of a local Ray (default: the machine's).
        actors: predict actors (default: one per ``gpus_per_actor`` GPUs, else CPUs // 4, ≥ 1).
        gpus_per_actor: GPUs per actor, fractional allowed (default 1 when the cluster has GPUs).
        cpus_per_actor: CPUs per actor, fractional (default: ≤ 1, leaving room for reads).
        cpus_per_read: CPUs per read task (fractional so reads never starve behind actors).
        resources: custom Ray resources every actor asks for (e.g. ``{"predict": 1}``).
        queue_per_actor: batches queued per actor; bounds the tiles in flight (backpressure).
        max_retries: retries of a read task, of an actor task, and of a batch by the driver.
        max_restarts: restarts of a crashed actor.
        ready_timeout_s: how long actors may take to start before the job fails.
        stall_timeout_s: how long without any finished batch before the job fails.
        threads: torch threads per actor (default: its whole CPUs, at least 1).
        object_store_mb: object store size of a local Ray (default: Ray's, 30% of memory);
            the tiles in flight need a few MB per actor.
        fallback: run in-process when no address is given and a local Ray cannot start.
    """

    address: str | None = None
    num_cpus: int | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float | None = None
    cpus_per_read: float = 0.25
    resources: Mapping[str, float] = field(default_factory=dict)
    queue_per_actor: int = 2
    max_retries: int = 3
    max_restarts: int = 3
    ready_timeout_s: float = 300.0
    stall_timeout_s: float = 600.0
    threads: int | None = None
    object_store_mb: int | None = None
    fallback: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.actors is None or self.actors >= 1, f"--actors {self.actors} must be >= 1"),
            (
                self.gpus_per_actor is None
                or (self.gpus_per_actor >= 0 and (self.gpus_per_actor <= 1 or self.gpus_per_actor % 1 == 0)),
                f"--gpus-per-actor {self.gpus_per_actor} must be in (0, 1] or a whole number",
            ),
            (self.cpus_per_actor is None or self.cpus_per_actor > 0, "cpus_per_actor must be > 0"),
            (self.cpus_per_read > 0, f"cpus_per_read={self.cpus_per_read} must be > 0, e.g. 0.25"),
            (self.queue_per_actor >= 1, f"queue_per_actor={self.queue_per_actor} must be >= 1"),
            (self.max_retries >= 0 and self.max_restarts >= 0, "max_retries/max_restarts must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{message}; fix the value")


@dataclass(frozen=True)
class PoolPlan:
    """The actor pool a cluster can hold: count, per-actor resources, device and torch threads."""

    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    cpus_per_read: float
    threads: int
    device: str
    resources: Mapping[str, float] = field(default_factory=dict)

    @property
    def actor_request(self) -> dict[str, float]:
        """The Ray resources one actor asks for."""
        req = {"CPU": self.cpus_per_actor, **self.resources}
        if self.gpus_per_actor:
            req["GPU"] = self.gpus_per_actor
        return req


def plan_pool(nodes: Sequence[Mapping[str, float]], *, device: str, options: RayOptions) -> PoolPlan:
    """Size the predict actor pool for a cluster's nodes (their total resources); pure.

    GPU actors when the cluster has GPUs (or ``device="cuda"``), CPU actors otherwise. Actors
    ask for fractional CPUs so that read tasks (``cpus_per_read`` each) always fit beside them.

    Raises:
        ExecutionError: when the cluster cannot hold the pool plus one read task; the message
            shows the request, the nodes and what to change.

    Example:
        >>> p = plan_pool([{"CPU": 2.0}], device="auto", options=RayOptions())
        >>> (p.actors, p.cpus_per_actor, p.gpus_per_actor, p.device)
        (1, 1.0, 0.0, 'cpu')
        >>> plan_pool([{"CPU": 8.0, "GPU": 2.0}], device="auto", options=RayOptions()).actors
        2
    """
    total_cpu = sum(n.get("CPU", 0.0) for n in nodes)
    total_gpu = sum(n.get("GPU", 0.0) for n in nodes)
    gpa_opt = options.gpus_per_actor
    if device == "cuda" and total_gpu == 0:
        raise ExecutionError(
            f"--device cuda but the Ray cluster has no GPU ({_describe(nodes)}); "
            "use --device auto/cpu or join a cluster with GPU nodes (--address)"
        )
    if gpa_opt and device == "cpu":
        raise ConfigError(f"--gpus-per-actor {gpa_opt} contradicts --device cpu; drop one of them")
    if gpa_opt and total_gpu == 0:
        raise ExecutionError(
            f"--gpus-per-actor {gpa_opt} but the Ray cluster has no GPU ({_describe(nodes)}); "
            "drop --gpus-per-actor to run on CPUs or join a GPU cluster with --address"
        )
    use_gpu = device != "cpu" and total_gpu > 0 and gpa_opt != 0
    gpa = (gpa_opt or 1.0) if use_gpu else 0.0
    if options.actors is not None:
        actors = options.actors
    elif use_gpu:
        actors = max(1, int(total_gpu // gpa))
    else:
        actors = max(1, int(total_cpu // 4))
    for name, need in options.resources.items():
        have = sum(n.get(name, 0.0) for n in nodes)
        if options.actors is None and need > 0:
            actors = max(1, min(actors, int(have // need)))
    reserve = max(2 * options.cpus_per_read, 0.25 * total_cpu)
    cpa = options.cpus_per_actor or math.floor(min(1.0, (total_cpu - reserve) / actors) * 20) / 20
    if cpa <= 0:
        raise ExecutionError(
            f"the Ray cluster's {total_cpu:g} CPUs cannot hold {actors} predict actors plus read tasks "
            f"({_describe(nodes)}); lower --actors or add CPUs"
        )
    # Ray's own convention (OMP_NUM_THREADS = the task's CPUs): oversubscribed torch threads
    # spin against each other and the reads, which costs far more than one thread per CPU.
    threads = options.threads or max(1, int(cpa))
    pool = PoolPlan(
        actors=actors,
        cpus_per_actor=cpa,
        gpus_per_actor=gpa,
        cpus_per_read=options.cpus_per_read,
        threads=threads,
        device="cuda" if use_gpu else "cpu",
        resources=dict(options.resources),
    )
    _check_fit(nodes, pool)
    return pool


def _check_fit(nodes: Sequence[Mapping[str, float]], pool: PoolPlan) -> None:
    """Place the actors first-fit on the nodes; then one read task must still fit somewhere."""
    free = [dict(n) for n in nodes]
    req = pool.actor_request
    for k in range(pool.actors):
        fits = [f for f in free if all(f.get(r, 0.0) >= v - 1e-9 for r, v in req.items())]
        if not fits:
            wanted = ", ".join(f"{r}: {v:g}" for r, v in req.items())
            raise ExecutionError(
                f"the Ray cluster cannot fit {pool.actors} predict actors of {{{wanted}}} (placed {k}; "
                f"{_describe(nodes)}); lower --actors or --gpus-per-actor, or add nodes"
            )
        node = max(fits, key=lambda f: f.get("CPU", 0.0))
        for r, v in req.items():
            node[r] = node.get(r, 0.0) - v
    if not any(f.get("CPU", 0.0) >= pool.cpus_per_read - 1e-9 for f in free):
        raise ExecutionError(
            f"no CPU is left for read tasks ({pool.cpus_per_read:g} CPU each) beside {pool.actors} actors "
            f"of {pool.cpus_per_actor:g} CPU ({_describe(nodes)}); lower --actors"
        )


def _describe(nodes: Sequence[Mapping[str, float]]) -> str:
    def one(n: Mapping[str, float]) -> str:
        keep = {k: v for k, v in n.items() if not k.startswith(("node:", "memory", "object_store"))}
        return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(keep.items())) + "}"

    return f"{len(nodes)} node(s): " + ", ".join(one(n) for n in nodes)


def local_system_config(num_cpus: int) -> dict[str, Any]:
    """Ray settings for a node that runs predict actors and fractional-CPU read tasks.

    Ray keeps at most ``num_workers_soft_limit`` (default: the node's CPUs) idle worker
    processes; with actors and several read tasks per CPU, a small node would kill and
    re-spawn a Python worker (seconds each) for nearly every read. Pass the same value to
    ``ray start --system-config`` on cluster nodes with few CPUs (see infra/README.md).

    Example:
        >>> local_system_config(2)
        {'num_workers_soft_limit': 8}
    """
    return {"num_workers_soft_limit": max(8, 4 * num_cpus)}


def _read_batch(job: Job, tiles: Sequence[Tile]) -> tuple[float, list[Chip | None]]:
    """Ray task body: the read stage for one batch of tiles, with the CPU seconds it took."""
    from geounet.pipeline import read_chips

    t0 = time.process_time()
    chips = read_chips(job, tiles)
    return time.process_time() - t0, chips


class _PredictActor:
    """Ray actor body: loads the bundle once, predicts batches of chips."""

    def __init__(self, job: Job, device: str, threads: int) -> None:
        import torch

        from geounet.pipeline import TilePredictor

        torch.set_num_threads(threads)
        self.predictor = TilePredictor(job, device=device)
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
) -> _Done:
    """Ray task body: read a batch, have ``actor`` predict it, write its raster and vector parts.

    One task per batch, placed on the actor's node: the driver submits one call and gets back
    one small :class:`_Done`; the chips and predictions only travel between this task and the
    actor. Ray releases this task's CPU while it waits for the actor.
    """
    import ray

    t0 = time.process_time()
    read = _read_batch(job, tiles)
    predict_node, pid, cpu, results = ray.get(actor.predict.remote(tiles, read))
    node = ray.get_runtime_context().get_node_id()
    parts.write_tiles(job, results, classes=classes, node=node, vectors=vectors)
    return _Done(predict_node, pid, node, cpu + time.process_time() - t0, len(results))


def _adopt_cached(job: Job, store: TileStore, classes: Sequence[ClassInfo], vectors: bool) -> _Done:
    """Ray task body: tiles a previous run cached in ``store`` (npz) → parts, without predicting."""
    import ray

    t0 = time.process_time()
    node = ray.get_runtime_context().get_node_id()
    todo = set(store.done) - parts.complete(parts.folder_of(job), store.done)
    cached = (r for r in store.cached() if r.tile.index in todo)
    infos = parts.write_tiles(job, cached, classes=classes, node=node, vectors=vectors)
    return _Done(node, os.getpid(), node, time.process_time() - t0, len(infos))


def _assemble(job: Job, classes: Sequence[ClassInfo], vectors: bool) -> tuple[dict[str, Any], str, float]:
    """Ray task body: the final COGs and polygon layer from the parts (counts, node id, CPU seconds)."""
    import ray

    t0 = time.process_time()
    counts = parts.assemble(job, classes=classes, vectors=vectors)
    return counts, ray.get_runtime_context().get_node_id(), time.process_time() - t0


@dataclass(frozen=True)
class _Done:
    """What a parts task reports: where the batch was predicted and written, its CPU time, its size."""

    predict_node: str
    pid: int
    node: str
    cpu_s: float
    tiles: int


@dataclass
class RayStats:
    """What a :class:`RayExecutor` run did (filled while it runs; for reports and tests)."""

    pool: PoolPlan | None = None
    actors: list[dict[str, Any]] = field(default_factory=list)
    tiles_per_node: dict[str, int] = field(default_factory=dict)
    pids: set[int] = field(default_factory=set)
    resubmitted: int = 0
    fell_back: bool = False
    #: Tiles whose parts (raster + vectors) each node wrote (parts mode, :meth:`RayExecutor.produce`).
    parts_per_node: dict[str, int] = field(default_factory=dict)
    #: CPU seconds of the workers' processes in reads, predictions, parts and assembly.
    worker_cpu_s: float = 0.0
    #: The node that assembled the final products (parts mode).
    assembled_on: str | None = None


@dataclass
class _Batch:
    tiles: list[Tile]
    actor: int = -1
    attempt: int = 0


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
                from geounet.pipeline import local_results

                yield from local_results(job, tiles=todo)
                return
            import ray

            job_ref, actors, pool = ray_pool
            read: Any = ray.remote(_read_batch).options(
                num_cpus=pool.cpus_per_read, max_retries=self.options.max_retries
            )

            def submit(batch: list[Tile], actor: int) -> Any:
                return actors[actor].predict.remote(batch, read.remote(job_ref, batch))

            for node, pid, cpu, results in self._stream(
                todo, actors, submit, batch_size=job.options.batch_size
            ):
                self._count(node, pid, cpu, len(results))
                yield from results

    def produce(
        self, job: Job, *, tiles: Sequence[Tile], store: TileStore, progress: bool | None = None
    ) -> dict[str, Any]:
        """Predict ``tiles`` into parts on the workers and assemble the rasters and polygons there.

        The parts executor of :func:`geounet.pipeline.run`. Tiles whose parts a previous run
        completed are reused, tiles the run cache (``store``) holds from another executor are
        turned into parts without predicting, and ``store.reused`` counts both. Returns the
        counts of :func:`geounet.pipeline.write_rasters` plus ``vectors`` (the polygon layer's
        path) when the polygons could be finished per tile (see :func:`parts.vectors_per_tile`).
        ``merge=blend`` (and a local fallback) take the driver path: results stream to
        :func:`geounet.pipeline.write_rasters`.
        """
        from geounet.pipeline import load_bundle, local_results, write_rasters

        if job.options.merge != "crop":
            return self._write_stream(job, self(job, tiles=tiles), store, write_rasters)
        folder = parts.folder_of(job)
        reused = parts.complete(folder, range(len(job.plan)))
        todo = [t for t in tiles if t.index not in reused]
        store.reused = len(reused | set(store.done))
        if reused:
            log.info("resuming: reusing %d of %d tiles from %s", store.reused, len(job.plan), folder)
        classes = tuple(load_bundle(job.model_path).classes)
        vectors = parts.vectors_per_tile(job.options.simplify, job.grid)
        with self._pool(job) as ray_pool:
            if ray_pool is None:
                return self._write_stream(job, local_results(job, tiles=tiles), store, write_rasters)
            import ray

            job_ref, actors, pool = ray_pool
            if set(store.done) - reused:
                self._wait(ray.remote(_adopt_cached).options(num_cpus=pool.cpus_per_read).remote(
                    job_ref, store, classes, vectors))  # fmt: skip
            self._write_parts(
                job_ref,
                todo,
                actors,
                pool,
                classes=classes,
                vectors=vectors,
                batch_size=job.options.batch_size,
            )
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
        job_ref: Any,
        todo: list[Tile],
        actors: list[Any],
        pool: PoolPlan,
        *,
        classes: Sequence[ClassInfo],
        vectors: bool,
        batch_size: int,
    ) -> None:
        """Read → predict → write parts for every batch of ``todo``; the driver sees only :class:`_Done`."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

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
            self._count(done.predict_node, done.pid, done.cpu_s, done.tiles)
            self.stats.parts_per_node[done.node] = self.stats.parts_per_node.get(done.node, 0) + done.tiles
            finished += done.tiles
            if finished // step != (finished - done.tiles) // step or finished == total:
                log.info("predict: %d/%d tiles written as parts", finished, total)

    def _count(self, node: str, pid: int, cpu: float, tiles: int) -> None:
        self.stats.tiles_per_node[node] = self.stats.tiles_per_node.get(node, 0) + tiles
        self.stats.pids.add(pid)
        self.stats.worker_cpu_s += cpu

    @staticmethod
    def _write_stream(
        job: Job, results: Iterator[TileResult], store: TileStore, write: Callable[..., dict[str, Any]]
    ) -> dict[str, Any]:
        """The driver path: cached tiles, then ``results`` (recorded as they pass) into ``write``."""
        recorded = store.record(results)
        try:
            return dict(write(job, itertools.chain(store.cached(), recorded)))
        finally:
            for stream in (recorded, results):  # stops the actors even when writing failed
                close = getattr(stream, "close", None)
                if close is not None:
                    close()

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
            actors = self._start_actors(job, pool)
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
            cause = getattr(exc, "cause", None)
            if isinstance(cause, GeounetError):
                raise cause from None
            raise ExecutionError(
                f"a Ray task failed: {first_line(exc)}; rerun (finished tiles are reused)"
            ) from exc
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
        kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                # num_cpus None: Ray counts the CPUs itself (it honours container CPU limits).
                ncpu = self.options.num_cpus or len(os.sched_getaffinity(0))
                ray.init(
                    address="local",
                    num_cpus=self.options.num_cpus,
                    object_store_memory=self.options.object_store_mb and self.options.object_store_mb * 2**20,
                    include_dashboard=False,
                    _system_config=local_system_config(ncpu),
                    **kwargs,
                )
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
            where = f"join the Ray cluster at {address!r}" if address else "start a local Ray"
            raise ExecutionError(
                f"cannot {where} ({first_line(exc)}); check --address/RAY_ADDRESS or use --executor local"
            ) from exc
        return True

    def _start_actors(self, job: Job, pool: PoolPlan) -> list[Any]:
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
        actors: list[Any] = [cls.remote(job, pool.device, pool.threads) for _ in range(pool.actors)]
        infos = [a.info.remote() for a in actors]
        ready, pending = ray.wait(infos, num_returns=len(infos), timeout=self.options.ready_timeout_s)
        try:
            self.stats.actors = ray.get(ready if pending else infos)  # in actor order once all started
        except ray.exceptions.RayActorError as exc:
            for a in actors:
                ray.kill(a, no_restart=True)
            raise ExecutionError(
                f"a predict actor failed to start: {_actor_cause(exc)}; rerun with --executor local -v"
            ) from exc
        if pending:
            for a in actors:
                ray.kill(a, no_restart=True)
            raise ExecutionError(
                f"only {len(ready)} of {len(actors)} predict actors started within "
                f"{self.options.ready_timeout_s:g} s (each asks {pool.actor_request}; available: "
                f"{_describe([ray.available_resources()])}); lower --actors or --gpus-per-actor"
            )
        log.info(
            "ray: %d actor(s) on %s, %g CPU / %g GPU each, on %d node(s)",
            len(actors),
            pool.device,
            pool.cpus_per_actor,
            pool.gpus_per_actor,
            len({i["node_id"] for i in self.stats.actors}),
        )
        return actors

    def _stream(
        self,
        tiles: list[Tile],
        actors: list[Any],
        submit: Callable[[list[Tile], Any], Any],
        *,
        batch_size: int,
    ) -> Iterator[Any]:
        """Submit the batches of ``tiles`` (``submit(batch, actor index)`` → ref) with backpressure; yield their values.

        Batches lost with an actor, a worker or a node are resubmitted (``max_retries`` times);
        a task's :class:`GeounetError` (a read or model error) surfaces as itself.
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

        todo = deque(_Batch(tiles[i : i + batch_size]) for i in range(0, len(tiles), batch_size))
        alive = list(range(len(actors)))
        load = [0] * len(actors)
        inflight: dict[Any, _Batch] = {}
        limit = max(1, len(actors) * self.options.queue_per_actor)
        while todo or inflight:
            while todo and len(inflight) < limit:
                batch = todo.popleft()
                batch.actor = min(alive, key=lambda a: load[a])
                load[batch.actor] += 1
                inflight[submit(batch.tiles, batch.actor)] = batch
            # fetch_local=False: the driver waits for the (small) result, never pulls it early
            ready, _ = ray.wait(
                list(inflight), num_returns=1, timeout=self.options.stall_timeout_s, fetch_local=False
            )
            if not ready:
                raise ExecutionError(
                    f"no batch finished in {self.options.stall_timeout_s:g} s ({len(inflight)} in flight; "
                    f"available: {_describe([ray.available_resources()])}); check the cluster "
                    "(`ray status`) or rerun with --executor local"
                )
            for ref in ready:
                batch = inflight.pop(ref)
                load[batch.actor] -= 1
                try:
                    value = ray.get(ref, timeout=self.options.stall_timeout_s)
                except (RayActorError, ObjectLostError, OwnerDiedError, WorkerCrashedError) as exc:
                    # before RayTaskError: a task downstream of a dead actor raises both types
                    if isinstance(exc, ActorDiedError) and batch.actor in alive:
                        alive.remove(batch.actor)
                        log.warning("predict actor %d died for good: %s", batch.actor, _actor_cause(exc))
                    if not alive:
                        raise ExecutionError(
                            f"every predict actor died (last: {_actor_cause(exc)}); "
                            "see `ray status` and rerun (finished tiles are reused)"
                        ) from exc
                    if batch.attempt >= self.options.max_retries:
                        raise ExecutionError(
                            f"tiles {batch.tiles[0].index}..{batch.tiles[-1].index} failed "
                            f"{batch.attempt + 1} times ({first_line(exc)}); rerun to resume"
                        ) from exc
                    log.warning("resubmitting %d tiles after: %s", len(batch.tiles), first_line(exc))
                    self.stats.resubmitted += 1
                    todo.appendleft(_Batch(batch.tiles, attempt=batch.attempt + 1))
                    continue
                except RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, GeounetError):
                        raise cause from None  # a read or model error: its message says what to fix
                    raise ExecutionError(
                        f"a Ray task failed: {first_line(exc)}; rerun with --executor local -v"
                    ) from exc
                except GetTimeoutError as exc:
                    raise ExecutionError(
                        f"a finished batch could not be fetched in {self.options.stall_timeout_s:g} s "
                        f"({first_line(exc)}); check the cluster (`ray status`)"
                    ) from exc
                yield value


def _actor_cause(exc: BaseException) -> str:
    """The useful line of an actor error (the constructor's exception, when there is one)."""
    text = str(exc)
    for line in reversed(text.splitlines()):
        if "Error:" in line and "ray" not in line.split(":")[0].lower():
            return line.strip()
    return first_line(exc)
