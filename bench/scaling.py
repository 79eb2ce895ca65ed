"""Scaling: tiles/s with 1, 2, 4 predict actors on a ``ray.cluster_utils.Cluster``; per-tile Ray overhead.

Run: ``python -m bench.scaling [--actors 1,2,4] [--size 1024] [--width 8] [--nodes 2] [--cpus-per-node 2]``

A local multi-node Ray cluster (``ray.cluster_utils.Cluster``: one raylet per node, all on
this machine) runs the read and predict stages through :class:`geounet.distributed.RayExecutor`
(when this checkout has it; otherwise plain Ray actors around :class:`geounet.predict.TilePredictor`
and read tasks around :func:`geounet.predict.read_chips`, and the output says so). Actors ask
for fractional CPUs and ``--threads`` torch threads each, so the figures show how throughput
scales with actors on the CPUs that really exist (on a 2-core machine: at most 2x).

Two throughputs per actor count: ``wall`` (from the call to the last tile, actor start-up and
model loading included) and ``steady`` (from the first finished batch to the last).

Scheduling overhead: a near-zero-cost ("no-op") model — a depth-1, width-1 U-Net on 64 px tiles, a few
hundred FLOPs per pixel — predicted one tile per batch, in-process (``local_results``) and
through Ray with one actor. Ray's per-tile time with the no-op model bounds its per-tile
scheduling + object-transfer + result-return overhead from above (it includes the read of
the tile). The difference to in-process is also shown; it is negative when Ray's parallel
read tasks hide more than its overhead costs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import common

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@contextlib.contextmanager
def local_cluster(nodes: int, cpus_per_node: float) -> Iterator[Any]:
    """A ``ray.cluster_utils.Cluster`` of ``nodes`` raylets on this machine, connected; shut down after."""
    import ray
    from ray.cluster_utils import Cluster

    node_args: dict[str, Any] = {"num_cpus": cpus_per_node, "object_store_memory": 200 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def executor_for(actors: int, *, cpus_per_actor: float, threads: int) -> tuple[Any, str]:
    """geounet's RayExecutor when this checkout has it, else the plain-actor stand-in."""
    try:
        from geounet.distributed import RayExecutor
        from geounet.pool import RayOptions
    except ImportError:
        return PlainActors(actors, cpus_per_actor=cpus_per_actor, threads=threads), "plain Ray actors"
    options = RayOptions(actors=actors, cpus_per_actor=cpus_per_actor, threads=threads, fallback=False)
    return RayExecutor(options), "geounet.distributed.RayExecutor"


class PlainActors:
    """Stand-in executor: read tasks + an actor pool around TilePredictor, round-robin, 2 batches each."""

    def __init__(self, actors: int, *, cpus_per_actor: float, threads: int) -> None:
        self.actors, self.cpus, self.threads = actors, cpus_per_actor, threads

    def __call__(self, job: Any, *, tiles: Iterable[Any] | None = None) -> Iterator[Any]:
        import ray

        from geounet import predict

        class _Actor:
            def __init__(self, job: Any, threads: int) -> None:
                import torch

                torch.set_num_threads(threads)
                self.p = predict.TilePredictor(job, device="cpu")

            def predict(self, tiles: Any, chips: Any) -> Any:
                return self.p(tiles, chips)

        actor_cls: Any = ray.remote(num_cpus=self.cpus)(_Actor)
        read: Any = ray.remote(num_cpus=0.25)(predict.read_chips)
        pool = [actor_cls.remote(job, self.threads) for _ in range(self.actors)]
        todo = list(job.plan if tiles is None else tiles)
        size = job.options.batch_size
        batches = [todo[i : i + size] for i in range(0, len(todo), size)]
        inflight: list[Any] = []
        try:
            for k, batch in enumerate(batches):
                inflight.append(pool[k % len(pool)].predict.remote(batch, read.remote(job, batch)))
                if len(inflight) >= 2 * len(pool):
                    done, inflight = ray.wait(inflight, num_returns=1)
                    yield from ray.get(done[0])
            while inflight:
                done, inflight = ray.wait(inflight, num_returns=1)
                yield from ray.get(done[0])
        finally:
            for a in pool:
                ray.kill(a)


def timed_results(results: Iterable[Any]) -> tuple[float, float | None, int, int]:
    """(wall s, s from the first result to the last, tiles, tiles in the first result's batch)."""
    t0 = time.perf_counter()
    first: float | None = None
    first_n = n = 0
    last = t0
    for _ in results:
        now = time.perf_counter()
        n += 1
        if first is None:
            first = now
        if now - first < 1e-3:
            first_n += 1  # results of the first batch arrive together
        last = now
    steady = (last - first) if first is not None and n > first_n else None
    return last - t0, steady, n, first_n


def per_tile(timing: tuple[float, float | None, int, int]) -> float:
    """Seconds per tile after the first batch (start-up excluded), from :func:`timed_results`."""
    wall, steady, got, first_n = timing
    return steady / (got - first_n) if steady else wall / got


def plan_job(src: Path, bundle: Path, out: Path, *, batch: int) -> Any:
    from geounet import jobs, planning

    return planning.plan(
        src, model=bundle, out_dir=out, options=jobs.PredictOptions(batch_size=batch, device="cpu")
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from geounet import predict

    info, src = common.announce(args.size, workdir=args.workdir)
    print(
        f"cluster: ray.cluster_utils.Cluster, {args.nodes} nodes x {args.cpus_per_node:g} CPUs declared "
        f"(on {info['cores']} real cores); {args.cpus_per_actor:g} CPU and {args.threads} torch thread(s) per actor"
    )
    counts = [int(a) for a in args.actors.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="geounet-bench-") as tmp_s:
        tmp = Path(tmp_s)
        bundle = common.make_bundle(tmp / "m.safetensors", width=args.width, depth=args.depth, tile=args.tile)
        noop = common.make_bundle(
            tmp / "noop.safetensors", width=1, depth=1, n_classes=2, tile=args.noop_tile
        )
        job = plan_job(src, bundle, tmp / "o", batch=args.batch)
        noop_job = plan_job(src, noop, tmp / "n", batch=1)
        n_tiles = len(job.plan)
        print(
            f"model: U-Net width {args.width} depth {args.depth}, tile {job.plan.read_size}, {n_tiles} tiles, "
            f"batch {args.batch}; no-op model: U-Net width 1 depth 1, tile {noop_job.plan.read_size}, "
            f"{len(noop_job.plan)} tiles, batch 1"
        )
        local_noop = [
            per_tile(timed_results(predict.local_results(noop_job)))
            for _ in range(args.repeats if args.overhead else 0)
        ]
        with local_cluster(args.nodes, args.cpus_per_node):
            how = ""
            base: float | None = None
            for n in counts:
                walls, steadies = [], []
                for _ in range(args.repeats):
                    executor, how = executor_for(n, cpus_per_actor=args.cpus_per_actor, threads=args.threads)
                    wall, steady, got, first_n = timed_results(executor(job))
                    assert got == n_tiles, f"{got} results for {n_tiles} tiles"
                    walls.append(n_tiles / wall)
                    if steady:
                        steadies.append((got - first_n) / steady)
                w, s = common.Stat(tuple(walls)), common.Stat(tuple(steadies)) if steadies else None
                base = base or (s.median if s else w.median)
                rows.append(
                    {
                        "actors": n,
                        "tiles/s wall": w.fmt(3),
                        "tiles/s steady": s.fmt(3) if s else "-",
                        "speed-up (steady)": f"{(s.median if s else w.median) / base:.2f}",
                    }
                )
                print(f"  {n} actor(s): {rows[-1]}")
            ray_noop: list[float] = []
            for _ in range(args.repeats if args.overhead else 0):
                executor, how = executor_for(1, cpus_per_actor=args.cpus_per_actor, threads=args.threads)
                ray_noop.append(per_tile(timed_results(executor(noop_job))))
    loc = common.Stat(tuple(local_noop or [float("nan")])).map(lambda s: s * 1e3)
    ray_ms = common.Stat(tuple(ray_noop or [float("nan")])).map(lambda s: s * 1e3)
    overhead = common.Stat(tuple(r - loc.median for r in ray_ms.values))
    common.print_table(
        rows, title=f"scaling via {how}, {args.repeats} repeats (load {info['load1']} at start)"
    )
    common.print_table(
        [
            {"no-op model, batch 1": "in-process (steady) ms/tile", "value": loc.fmt(1)},
            {
                "no-op model, batch 1": "Ray (1 actor, steady) ms/tile = overhead bound",
                "value": ray_ms.fmt(1),
            },
            {"no-op model, batch 1": "Ray minus in-process ms/tile", "value": overhead.fmt(1)},
        ],
        title="per-tile scheduling overhead",
    )
    figures = {
        f"{r['actors']} actors tiles/s (steady; wall)": f"{r['tiles/s steady']}; {r['tiles/s wall']}"
        for r in rows
    }
    figures |= {
        "no-op ray ms/tile (overhead bound)": ray_ms.fmt(1),
        "no-op local ms/tile": loc.fmt(1),
        "ray minus local ms/tile": overhead.fmt(1),
        "via": how,
    }
    settings = {
        "input": f"{args.size}^2 mirror-tiled S2",
        "tiles": n_tiles,
        "tile": job.plan.read_size,
        "batch": args.batch,
        "width": args.width,
        "depth": args.depth,
        "nodes": args.nodes,
        "cpus/node": args.cpus_per_node,
        "cpus/actor": args.cpus_per_actor,
        "threads/actor": args.threads,
        "repeats": args.repeats,
    }
    if not args.no_record:
        print(
            f"row appended to {common.append_result('scaling', settings=settings, results=figures, info=info)}"
        )
    return {"rows": rows, "overhead_ms": overhead.median, "ray_ms": ray_ms.median, "via": how}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n")[0])
    ap.add_argument("--actors", default="1,2,4", help="comma-separated actor counts")
    ap.add_argument("--size", type=int, default=1024, help="input side, px (mirror-tiled real scene)")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--tile", type=int, default=None)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--nodes", type=int, default=2, help="raylets of the local Cluster")
    ap.add_argument("--cpus-per-node", type=float, default=2.0, help="CPUs each node declares")
    ap.add_argument("--cpus-per-actor", type=float, default=0.5, help="fractional CPU request per actor")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per actor")
    ap.add_argument(
        "--no-overhead", dest="overhead", action="store_false", help="skip the no-op overhead measurement"
    )
    ap.add_argument("--noop-tile", type=int, default=64, help="tile side of the no-op model, px")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    run(parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
