"""The Ray executor's plain values: its options, the actor pool a cluster can hold, its report.

Pure (no ``ray`` import): :func:`plan_pool` sizes the pool from the nodes' resources, so a
plan can be checked, and tested, without a cluster; :mod:`geounet.distributed` starts it.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from geounet.errors import ConfigError, ExecutionError, first_line

if TYPE_CHECKING:
    from geounet.tiling import Tile

log = logging.getLogger(__name__)


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
    _check_devices(nodes, device=device, gpus_per_actor=options.gpus_per_actor, total_gpu=total_gpu)
    use_gpu = device != "cpu" and total_gpu > 0 and options.gpus_per_actor != 0
    gpa = (options.gpus_per_actor or 1.0) if use_gpu else 0.0
    actors = _actor_count(nodes, options=options, gpus_per_actor=gpa)
    reserve = max(2 * options.cpus_per_read, 0.25 * total_cpu)
    cpa = options.cpus_per_actor or math.floor(min(1.0, (total_cpu - reserve) / actors) * 20) / 20
    if cpa <= 0:
        raise ExecutionError(
            f"the Ray cluster's {total_cpu:g} CPUs cannot hold {actors} predict actors plus read tasks "
            f"({describe_nodes(nodes)}); lower --actors or add CPUs"
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


def _check_devices(
    nodes: Sequence[Mapping[str, float]], *, device: str, gpus_per_actor: float | None, total_gpu: float
) -> None:
    """GPU options that the cluster (or ``--device``) contradicts fail before any actor starts."""
    if device == "cuda" and total_gpu == 0:
        raise ExecutionError(
            f"--device cuda but the Ray cluster has no GPU ({describe_nodes(nodes)}); "
            "use --device auto/cpu or join a cluster with GPU nodes (--address)"
        )
    if gpus_per_actor and device == "cpu":
        raise ConfigError(f"--gpus-per-actor {gpus_per_actor} contradicts --device cpu; drop one of them")
    if gpus_per_actor and total_gpu == 0:
        raise ExecutionError(
            f"--gpus-per-actor {gpus_per_actor} but the Ray cluster has no GPU ({describe_nodes(nodes)}); "
            "drop --gpus-per-actor to run on CPUs or join a GPU cluster with --address"
        )


def _actor_count(nodes: Sequence[Mapping[str, float]], *, options: RayOptions, gpus_per_actor: float) -> int:
    """``--actors``, else one per ``gpus_per_actor`` GPUs (or per 4 CPUs), capped by custom resources."""
    if options.actors is not None:
        return options.actors
    if gpus_per_actor:
        actors = max(1, int(sum(n.get("GPU", 0.0) for n in nodes) // gpus_per_actor))
    else:
        actors = max(1, int(sum(n.get("CPU", 0.0) for n in nodes) // 4))
    for name, need in options.resources.items():
        if need > 0:
            actors = max(1, min(actors, int(sum(n.get(name, 0.0) for n in nodes) // need)))
    return actors


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
                f"{describe_nodes(nodes)}); lower --actors or --gpus-per-actor, or add nodes"
            )
        node = max(fits, key=lambda f: f.get("CPU", 0.0))
        for r, v in req.items():
            node[r] = node.get(r, 0.0) - v
    if not any(f.get("CPU", 0.0) >= pool.cpus_per_read - 1e-9 for f in free):
        raise ExecutionError(
            f"no CPU is left for read tasks ({pool.cpus_per_read:g} CPU each) beside {pool.actors} actors "
            f"of {pool.cpus_per_actor:g} CPU ({describe_nodes(nodes)}); lower --actors"
        )


def describe_nodes(nodes: Sequence[Mapping[str, float]]) -> str:
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


@dataclass(frozen=True)
class BatchDone:
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

    def count(self, node: str, pid: int, cpu_s: float, tiles: int) -> None:
        """Record ``tiles`` predicted on ``node`` by process ``pid`` in ``cpu_s`` CPU seconds."""
        self.tiles_per_node[node] = self.tiles_per_node.get(node, 0) + tiles
        self.pids.add(pid)
        self.worker_cpu_s += cpu_s

    def count_parts(self, done: BatchDone) -> None:
        """Record a parts task's batch: predicted on ``done.predict_node``, written on ``done.node``."""
        self.count(done.predict_node, done.pid, done.cpu_s, done.tiles)
        self.parts_per_node[done.node] = self.parts_per_node.get(done.node, 0) + done.tiles


def actor_cause(exc: BaseException) -> str:
    """The useful line of an actor error (the constructor's exception, when there is one)."""
    text = str(exc)
    for line in reversed(text.splitlines()):
        if "Error:" in line and "ray" not in line.split(":")[0].lower():
            return line.strip()
    return first_line(exc)


@dataclass
class Batch:
    """Tiles sent together to one actor; ``attempt`` counts resubmissions after a loss."""

    tiles: list[Tile]
    actor: int = -1
    attempt: int = 0


class BatchQueue:
    """Which batch goes to which actor, with backpressure and resubmission; pure (no Ray).

    At most ``actors × queue_per_actor`` batches are in flight; each new one goes to the live
    actor with the fewest. A batch lost with an actor, a worker or a node goes back to the
    front of the queue, at most ``max_retries`` times.

    Example:
        >>> from geounet.tiling import grid
        >>> q = BatchQueue(list(grid((64, 64), tile=32, halo=0)), batch_size=2, actors=1, queue_per_actor=1)
        >>> q.fill(lambda batch: len(q.inflight))
        >>> [(ref, len(b.tiles), b.actor) for ref, b in q.inflight.items()]
        [(0, 2, 0)]
        >>> q.finish(0).tiles[0].index, bool(q)
        (0, True)
    """

    def __init__(
        self,
        tiles: Sequence[Tile],
        *,
        batch_size: int,
        actors: int,
        queue_per_actor: int,
        max_retries: int = 3,
    ) -> None:
        self.todo = deque(Batch(list(tiles[i : i + batch_size])) for i in range(0, len(tiles), batch_size))
        self.alive = list(range(actors))
        self.load = [0] * actors
        self.limit = max(1, actors * queue_per_actor)
        self.max_retries = max_retries
        self.inflight: dict[Any, Batch] = {}

    def __bool__(self) -> bool:
        return bool(self.todo or self.inflight)

    def fill(self, submit: Callable[[Batch], Any]) -> None:
        """Submit queued batches (``submit(batch)`` → a ref) until the in-flight limit."""
        while self.todo and len(self.inflight) < self.limit:
            batch = self.todo.popleft()
            batch.actor = min(self.alive, key=lambda a: self.load[a])
            self.load[batch.actor] += 1
            self.inflight[submit(batch)] = batch

    def finish(self, ref: Any) -> Batch:
        """The batch behind a finished ``ref``, no longer in flight."""
        batch = self.inflight.pop(ref)
        self.load[batch.actor] -= 1
        return batch

    def lost(self, batch: Batch, exc: BaseException, *, actor_died: bool) -> None:
        """Queue ``batch`` again after ``exc``; ``actor_died``: its actor is gone for good.

        Raises:
            ExecutionError: when every actor died, or the batch failed ``max_retries`` + 1 times.
        """
        if actor_died and batch.actor in self.alive:
            self.alive.remove(batch.actor)
            log.warning("predict actor %d died for good: %s", batch.actor, actor_cause(exc))
        if not self.alive:
            raise ExecutionError(
                f"every predict actor died (last: {actor_cause(exc)}); "
                "see `ray status` and rerun (finished tiles are reused)"
            ) from exc
        if batch.attempt >= self.max_retries:
            raise ExecutionError(
                f"tiles {batch.tiles[0].index}..{batch.tiles[-1].index} failed "
                f"{batch.attempt + 1} times ({first_line(exc)}); rerun to resume"
            ) from exc
        log.warning("resubmitting %d tiles after: %s", len(batch.tiles), first_line(exc))
        self.todo.appendleft(Batch(batch.tiles, attempt=batch.attempt + 1))
