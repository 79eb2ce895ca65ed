"""Ray executor on a real Ray cluster: same outputs as in-process, multi-node, faults, resume, GPU.

One ``ray.cluster_utils.Cluster`` serves the module (2-CPU head); the multi-node tests at the end
add two worker nodes with a custom ``predict`` resource. Every comparison is against the
in-process executor's outputs on the real Landsat scene (``rgb_reference``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures_ray import RGB_OPTIONS, assert_same_outputs, outputs_of

from geounet import jobs, pipeline, planning, predict
from geounet.distributed import RayExecutor
from geounet.errors import ConfigError, ExecutionError
from geounet.parts import PARTS_DIR
from geounet.pool import PoolPlan, RayOptions, plan_pool
from geounet.resume import RUN_DIR
from geounet.tiling import Tile

CUDA = torch.cuda.is_available()


# -- pool sizing (pure) -------------------------------------------------------------------------


def test_pool_on_two_cpus_leaves_room_for_reads() -> None:
    pool = plan_pool([{"CPU": 2.0}], device="auto", options=RayOptions())
    assert (pool.actors, pool.device, pool.gpus_per_actor, pool.threads) == (1, "cpu", 0.0, 1)
    assert pool.cpus_per_actor * pool.actors + pool.cpus_per_read <= 2.0
    two = plan_pool([{"CPU": 2.0}], device="auto", options=RayOptions(actors=2))
    assert two.cpus_per_actor == 0.75  # fractional: both actors and reads fit


def test_pool_one_actor_per_gpu_and_fractional_gpus() -> None:
    nodes = [{"CPU": 8.0, "GPU": 2.0}, {"CPU": 8.0, "GPU": 2.0}]
    pool = plan_pool(nodes, device="auto", options=RayOptions())
    assert (pool.actors, pool.gpus_per_actor, pool.device) == (4, 1.0, "cuda")
    half = plan_pool(nodes, device="auto", options=RayOptions(gpus_per_actor=0.5))
    assert half.actors == 8 and half.actor_request["GPU"] == 0.5
    assert plan_pool(nodes, device="cpu", options=RayOptions()).device == "cpu"


@pytest.mark.parametrize(
    ("nodes", "device", "options", "message"),
    [
        ([{"CPU": 4.0}], "cuda", RayOptions(), "no GPU"),
        ([{"CPU": 4.0}], "auto", RayOptions(gpus_per_actor=1), "no GPU"),
        ([{"CPU": 4.0, "GPU": 1.0}], "auto", RayOptions(actors=2), "cannot fit 2 predict actors"),
        ([{"CPU": 2.0}], "auto", RayOptions(actors=2, cpus_per_actor=1.0), "no CPU is left for read tasks"),
        ([{"CPU": 2.0}], "auto", RayOptions(resources={"predict": 1}), "cannot fit"),
    ],
)
def test_pool_that_cannot_fit_fails_with_a_clear_message(
    nodes: list[dict[str, float]], device: str, options: RayOptions, message: str
) -> None:
    with pytest.raises(ExecutionError, match=message):
        plan_pool(nodes, device=device, options=options)


def test_pool_plan_is_a_value() -> None:
    pool = PoolPlan(
        actors=1, cpus_per_actor=0.5, gpus_per_actor=0.0, cpus_per_read=0.25, threads=1, device="cpu"
    )
    assert pool.actor_request == {"CPU": 0.5}


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"--gpus-per-actor 1\.5"):
        RayOptions(gpus_per_actor=1.5)
    with pytest.raises(ConfigError, match="--actors 0"):
        RayOptions(actors=0)


def test_ray_options_need_the_ray_executor(landsat_rgb: Path, rgb_bundle: Path, tmp_path: Path) -> None:
    from geounet.cli import main

    args = ["predict", str(landsat_rgb), "--model", str(rgb_bundle), "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--executor", "local", "--actors", "2"])
    assert exit_.value.code == 1
    assert not (tmp_path / "classes.tif").exists()


# -- on a real Ray cluster ----------------------------------------------------------------------


def _job(source: Path, bundle: Path, out: Path, **changes: Any) -> jobs.Job:
    import dataclasses

    options = dataclasses.replace(RGB_OPTIONS, **changes)
    return planning.plan(source, model=bundle, out_dir=out, options=options)


def _midway(executor: RayExecutor, after: int, action: Callable[[], None]) -> predict.ResultsFn:
    """``executor``, calling ``action()`` once ``after`` tiles have come back."""

    def results(job: jobs.Job, *, tiles: Iterable[Tile] | None = None) -> Iterator[jobs.TileResult]:
        for k, res in enumerate(executor(job, tiles=tiles)):
            if k == after:
                action()
            yield res

    return results


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not CUDA, reason="CUDA is not available here: GPU actors not exercised"),
            ],
        ),
    ],
)
def test_ray_gives_the_same_outputs_as_in_process(
    ray_cluster: Any, landsat_rgb: Path, rgb_bundle: Path, rgb_reference: Path, tmp_path: Path, device: str
) -> None:
    job = _job(landsat_rgb, rgb_bundle, tmp_path, device=device)
    gpus = 0.5 if device == "cuda" else None
    executor = RayExecutor(RayOptions(actors=2, cpus_per_actor=0.5, gpus_per_actor=gpus, ready_timeout_s=120))
    pipeline.run(job, results=executor, progress=False)
    assert executor.stats.pool is not None and executor.stats.pool.device == device
    assert {a["device"].split(":")[0] for a in executor.stats.actors} == {device}
    assert sum(executor.stats.tiles_per_node.values()) == len(job.plan)
    assert len(executor.stats.pids) == 2  # both actors did work
    if device == "cpu":
        assert_same_outputs(rgb_reference, tmp_path)
    else:  # mixed precision on the GPU: the same map up to rare near-ties
        ref, got = outputs_of(rgb_reference)[0], outputs_of(tmp_path)[0]
        assert np.mean(ref == got) > 0.995


def test_blend_on_ray_equals_blend_in_process(
    ray_cluster: Any, landsat_rgb: Path, rgb_bundle: Path, tmp_path: Path
) -> None:
    """merge=blend ships read-window probabilities from the actors: the same mosaic as in-process."""
    local = _job(landsat_rgb, rgb_bundle, tmp_path / "local", merge="blend", halo=16, tile=96)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the actors
    try:
        pipeline.run(local, progress=False)
    finally:
        torch.set_num_threads(before)
    remote = _job(landsat_rgb, rgb_bundle, tmp_path / "ray", merge="blend", halo=16, tile=96)
    executor = RayExecutor(RayOptions(actors=2, cpus_per_actor=0.5, ready_timeout_s=120))
    pipeline.run(remote, results=executor, progress=False)
    assert sum(executor.stats.tiles_per_node.values()) == len(remote.plan)
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")
    crop = outputs_of(Path(tmp_path / "local"))[0]
    assert len(np.unique(crop[crop != 255])) >= 2


def test_killed_actor_is_restarted_and_the_job_completes(
    ray_cluster: Any, landsat_rgb: Path, rgb_bundle: Path, rgb_reference: Path, tmp_path: Path
) -> None:
    executor = RayExecutor(RayOptions(actors=1, cpus_per_actor=0.5, ready_timeout_s=120))
    killed: list[int] = []

    def kill_actor() -> None:
        killed.append(executor.stats.actors[0]["pid"])
        os.kill(killed[0], signal.SIGKILL)

    job = _job(landsat_rgb, rgb_bundle, tmp_path)
    pipeline.run(job, results=_midway(executor, 60, kill_actor), progress=False)
    assert killed and len(executor.stats.pids) >= 2 and killed[0] in executor.stats.pids  # a new process
    assert_same_outputs(rgb_reference, tmp_path)


def test_a_read_error_in_a_task_surfaces_as_itself(
    ray_cluster: Any, landsat_rgb: Path, rgb_bundle: Path, tmp_path: Path
) -> None:
    import shutil

    from geounet.errors import InputNotFoundError

    source = shutil.copy(landsat_rgb, tmp_path / "scene.tif")
    job = _job(Path(source), rgb_bundle, tmp_path / "out")
    Path(source).unlink()  # gone after planning: every read task fails
    with pytest.raises(InputNotFoundError, match=r"scene\.tif"):
        pipeline.run(job, results=RayExecutor(RayOptions(actors=1, cpus_per_actor=0.5)), progress=False)
    assert not (tmp_path / "out" / "classes.tif").exists()


def _predict_cmd(source: Path, bundle: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "geounet",
        "predict",
        str(source),
        "--model",
        str(bundle),
        "--out",
        str(out),
        "--tile",
        str(RGB_OPTIONS.tile),
        "--halo",
        str(RGB_OPTIONS.halo),
        "--batch-size",
        str(RGB_OPTIONS.batch_size),
        "--executor",
        "ray",
        *extra,
    ]


def _done_tiles(out: Path) -> int:
    """Tiles finished so far: complete parts (Ray's produce) plus tiles in the run cache's log."""
    done = len(list((out / RUN_DIR / PARTS_DIR).glob("t*.npz")))
    log = out / RUN_DIR / "tiles.log"
    if not log.exists():
        return done
    return done + sum(
        len(re.findall(r"\d+", line.split('"tiles"')[-1])) for line in log.read_text().splitlines()
    )


def test_sigkilled_job_resumes_with_identical_outputs(
    ray_cluster: Any, landsat_rgb: Path, rgb_bundle: Path, rgb_reference: Path, tmp_path: Path
) -> None:
    """Killed while it runs on the cluster (--address), rerun on a local Ray it starts itself."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "GEOUNET_EXECUTOR")}
    total = 255
    cmd = _predict_cmd(landsat_rgb, rgb_bundle, tmp_path, "--address", ray_cluster.address, "--actors", "1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while _done_tiles(tmp_path) < total // 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, (
            f"the job ended before it could be killed:\n{proc.communicate()[0][-3000:]}"
        )
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    done = _done_tiles(tmp_path)
    assert total // 2 <= done < total
    assert not (tmp_path / "classes.tif").exists()

    rerun = subprocess.run(
        _predict_cmd(landsat_rgb, rgb_bundle, tmp_path, "--actors", "1"),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    reused = int(re.search(r"reusing (\d+) of 255 tiles", rerun.stderr).group(1))  # type: ignore[union-attr]
    assert reused >= done - 2 * RGB_OPTIONS.batch_size and reused >= total // 2 - 8
    assert "ray: 1 actor(s)" in rerun.stderr  # the rerun really ran on (a local) Ray
    assert_same_outputs(rgb_reference, tmp_path)


# -- several nodes ------------------------------------------------------------------------------


def test_an_actor_that_cannot_start_names_the_cause(
    ray_cluster: Any, landsat_rgb: Path, rgb_bundle: Path, tmp_path: Path
) -> None:
    """The bundle vanishes after planning: the actors' constructors fail to load it (the executor
    alone, as the driver's writer would load it too)."""
    import shutil

    bundle = Path(shutil.copy(rgb_bundle, tmp_path / "gone.safetensors"))
    job = _job(landsat_rgb, bundle, tmp_path / "out")
    bundle.unlink()
    executor = RayExecutor(RayOptions(actors=1, cpus_per_actor=0.5, max_restarts=0, ready_timeout_s=120))
    with pytest.raises(ExecutionError, match=r"a predict actor failed to start: .*gone\.safetensors") as err:
        list(executor(job))
    assert "rerun with --executor local -v" in str(err.value)


def test_no_batch_within_the_stall_timeout_fails(
    ray_cluster: Any, landsat_rgb: Path, rgb_bundle: Path, tmp_path: Path
) -> None:
    """A first batch (a read task, then a U-Net pass) cannot finish in 1 ms: the job fails, not hangs."""
    executor = RayExecutor(
        RayOptions(actors=1, cpus_per_actor=0.5, stall_timeout_s=0.001, ready_timeout_s=120)
    )
    with pytest.raises(
        ExecutionError, match=r"no batch finished in 0\.001 s \(\d+ in flight; available: .*CPU"
    ):
        pipeline.run(_job(landsat_rgb, rgb_bundle, tmp_path), results=executor, progress=False)
    assert executor.stats.actors  # it failed while streaming, after the pool had started


def test_every_actor_dead_for_good_fails_the_job(
    ray_cluster: Any, landsat_rgb: Path, rgb_bundle: Path, tmp_path: Path
) -> None:
    executor = RayExecutor(RayOptions(actors=1, cpus_per_actor=0.5, max_restarts=0, ready_timeout_s=120))

    def kill_actor() -> None:
        os.kill(executor.stats.actors[0]["pid"], signal.SIGKILL)

    job = _job(landsat_rgb, rgb_bundle, tmp_path)
    with pytest.raises(ExecutionError, match="every predict actor died") as err:
        pipeline.run(job, results=_midway(executor, 10, kill_actor), progress=False)
    assert "rerun (finished tiles are reused)" in str(err.value)
    assert not (tmp_path / "classes.tif").exists()


_NO_RAY_SCRIPT = """
import json, logging, sys, torch
from pathlib import Path
from geounet import pipeline, planning
from geounet.distributed import RayExecutor
from geounet.pool import RayOptions
from geounet.errors import ExecutionError
from fixtures_ray import RGB_OPTIONS
torch.set_num_threads(1)
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
source, bundle, out = sys.argv[1:4]
job = planning.plan(source, model=bundle, out_dir=out, options=RGB_OPTIONS)
report = {}
# a local Ray that cannot start (an object store below Ray's minimum): in-process instead
executor = RayExecutor(RayOptions(num_cpus=1, object_store_mb=1))
pipeline.run(job, results=executor, progress=False)
report["fell_back"] = executor.stats.fell_back
# the same failure without the fallback: the error, not the fallback
try:
    list(RayExecutor(RayOptions(num_cpus=1, object_store_mb=1, fallback=False))(job, tiles=list(job.plan)[:1]))
    report["no_fallback"] = "no error"
except ExecutionError as exc:
    report["no_fallback"] = str(exc)
print(json.dumps(report))
"""


def test_a_local_ray_that_cannot_start_falls_back_to_in_process(
    landsat_rgb: Path, rgb_bundle: Path, rgb_reference: Path, tmp_path: Path
) -> None:
    """In a fresh process (no Ray yet): the fallback gives the in-process outputs; with
    fallback=False the start error names the fix instead."""
    import json

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", _NO_RAY_SCRIPT, str(landsat_rgb), str(rgb_bundle), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["fell_back"] is True
    assert (
        "cannot start a local Ray" in proc.stderr and "running with --executor local instead" in proc.stderr
    )
    assert_same_outputs(rgb_reference, tmp_path)
    assert report["no_fallback"].startswith("cannot start a local Ray (")
    assert "minimum allowed" in report["no_fallback"]  # Ray's own reason, first line
    assert "check --address/RAY_ADDRESS or use --executor local" in report["no_fallback"]


@pytest.fixture(scope="module")
def workers(ray_cluster: Any) -> list[Any]:
    """Two worker nodes (1 CPU, 2 ``predict`` slots each) added to the module's cluster."""
    nodes = [ray_cluster.add_node(num_cpus=1, resources={"predict": 2}) for _ in range(2)]
    ray_cluster.wait_for_nodes()
    return nodes


SPREAD = RayOptions(actors=2, cpus_per_actor=0.25, resources={"predict": 1}, ready_timeout_s=120)


def test_actors_spread_over_worker_nodes(
    workers: list[Any], landsat_rgb: Path, rgb_bundle: Path, rgb_reference: Path, tmp_path: Path
) -> None:
    executor = RayExecutor(SPREAD)
    pipeline.run(_job(landsat_rgb, rgb_bundle, tmp_path), results=executor, progress=False)
    worker_ids = {w.node_id for w in workers}
    assert {a["node_id"] for a in executor.stats.actors} == worker_ids
    assert set(executor.stats.tiles_per_node) == worker_ids
    assert_same_outputs(rgb_reference, tmp_path)


def test_busy_cluster_fails_instead_of_hanging(
    workers: list[Any], landsat_rgb: Path, rgb_bundle: Path, tmp_path: Path
) -> None:
    import ray

    @ray.remote(num_cpus=0, resources={"predict": 2})
    class Hog:
        def ping(self) -> int:
            return 1

    hogs = [Hog.remote() for _ in workers]  # type: ignore[attr-defined]
    try:
        ray.get([h.ping.remote() for h in hogs], timeout=60)
        executor = RayExecutor(
            RayOptions(actors=1, cpus_per_actor=0.25, resources={"predict": 1}, ready_timeout_s=3)
        )
        start = time.monotonic()
        with pytest.raises(ExecutionError, match="0 of 1 predict actors started within 3 s"):
            pipeline.run(_job(landsat_rgb, rgb_bundle, tmp_path), results=executor, progress=False)
        assert time.monotonic() - start < 60
    finally:
        for h in hogs:
            ray.kill(h)


def test_worker_node_removed_mid_job(
    ray_cluster: Any,
    workers: list[Any],
    landsat_rgb: Path,
    rgb_bundle: Path,
    rgb_reference: Path,
    tmp_path: Path,
) -> None:
    executor = RayExecutor(SPREAD)
    removed: list[str] = []

    def remove_a_worker() -> None:
        victim = next(w for w in workers if w.node_id == executor.stats.actors[0]["node_id"])
        removed.append(victim.node_id)
        ray_cluster.remove_node(victim)

    job = _job(landsat_rgb, rgb_bundle, tmp_path)
    pipeline.run(job, results=_midway(executor, 60, remove_a_worker), progress=False)
    assert removed
    survivor = ({w.node_id for w in workers} - set(removed)).pop()
    assert executor.stats.tiles_per_node[survivor] > 0
    assert sum(executor.stats.tiles_per_node.values()) == len(job.plan)
    assert_same_outputs(rgb_reference, tmp_path)


def test_killed_actor_while_writing_parts_is_restarted_and_the_job_completes(
    ray_cluster: Any, landsat_rgb: Path, rgb_bundle: Path, rgb_reference: Path, tmp_path: Path
) -> None:
    """The parts path (``produce``, what pipeline.run calls): an actor killed mid-job comes back."""
    import threading

    executor = RayExecutor(RayOptions(actors=1, cpus_per_actor=0.5, ready_timeout_s=120))
    killed: list[int] = []

    def kill_when_a_quarter_is_done() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and sum(executor.stats.tiles_per_node.values()) < 64:
            time.sleep(0.02)
        if executor.stats.actors:
            killed.append(executor.stats.actors[0]["pid"])
            os.kill(killed[0], signal.SIGKILL)

    job = _job(landsat_rgb, rgb_bundle, tmp_path)
    killer = threading.Thread(target=kill_when_a_quarter_is_done, daemon=True)
    killer.start()
    pipeline.run(job, results=executor, progress=False)
    killer.join(timeout=5)
    assert killed and killed[0] in executor.stats.pids and len(executor.stats.pids) >= 2  # a new process
    assert sum(executor.stats.parts_per_node.values()) == len(job.plan)
    assert_same_outputs(rgb_reference, tmp_path)


def test_blend_keeps_the_driver_path_with_the_same_outputs(
    ray_cluster: Any, landsat_rgb: Path, rgb_bundle: Path, tmp_path: Path
) -> None:
    """merge=blend crosses tiles: ``produce`` streams results to the driver's writer, no parts."""
    local = _job(landsat_rgb, rgb_bundle, tmp_path / "local", merge="blend")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the actors
    try:
        pipeline.run(local, progress=False)
    finally:
        torch.set_num_threads(before)
    job = _job(landsat_rgb, rgb_bundle, tmp_path / "ray", merge="blend")
    executor = RayExecutor(RayOptions(actors=1, cpus_per_actor=0.5, ready_timeout_s=120))
    pipeline.run(job, results=executor, progress=False)
    assert executor.stats.parts_per_node == {} and sum(executor.stats.tiles_per_node.values()) == len(
        job.plan
    )
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")
