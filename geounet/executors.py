"""Executors by name: ``auto``, ``local`` (in-process, :func:`geounet.predict.local_results`) or ``ray``.

The one place that turns an executor name (``--executor``, ``execution.executor``, the
notebook's ``executor=``) into the function that yields a job's tile results; Ray is
imported only when ``ray`` is chosen (:class:`geounet.distributed.RayExecutor`).

``auto`` (the default) follows the job. One process does a photo or a scene on one
machine as well as Ray can: the in-process executor keeps every core busy (reader threads,
the streamed model using all of torch's threads, polygons vectorized in a thread while the
model works) and starts in a second, where a local Ray costs 10-30 s of start-up and a copy
of every tile through its object store. Ray pays where there is more than one machine or
device to fill: a cluster address (``--address`` or ``RAY_ADDRESS``) or several GPUs.
``local`` and ``ray`` force either.

Example:
    >>> choose("auto", address=None, environ={}, gpus=0)
    'local'
    >>> choose("auto", address=None, environ={"RAY_ADDRESS": "head:6379"}, gpus=0)
    'ray'
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from geounet import predict
from geounet.errors import ConfigError

EXECUTORS = ("auto", "local", "ray")


def choose(
    name: str,
    *,
    address: str | None,
    environ: Mapping[str, str] | None = None,
    gpus: int | None = None,
    key: str = "executor",
) -> str:
    """``local`` or ``ray`` for executor ``name`` (auto: Ray with a cluster address or 2+ GPUs).

    Raises:
        ConfigError: on an unknown name.
    """
    if name not in EXECUTORS:
        raise ConfigError(f"{key}={name!r} is unknown; use one of {', '.join(EXECUTORS)}")
    if name != "auto":
        return name
    env = os.environ if environ is None else environ
    if address or env.get("RAY_ADDRESS"):
        return "ray"
    return "ray" if (_gpu_count() if gpus is None else gpus) > 1 else "local"


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def results_fn(
    name: str,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    actors: int | None = None,
    gpus_per_actor: float | None = None,
    key: str = "executor",
) -> predict.ResultsFn:
    """The executor called ``name``; the Ray settings size a :class:`~geounet.pool.RayOptions`.

    ``key`` is how the caller names the choice in messages (``--executor``,
    ``execution.executor``...).

    Raises:
        ConfigError: on an unknown name, or Ray settings given to the local executor.

    Example:
        >>> results_fn("local") is predict.local_results
        True
    """
    kind = choose(name, address=address, key=key)
    if kind == "local":
        if name == "local" and (address or actors or gpus_per_actor):
            raise ConfigError("--address/--actors/--gpus-per-actor need --executor ray; drop them or add it")
        return predict.local_results
    from geounet import distributed, pool

    options = pool.RayOptions(
        address=address, num_cpus=num_cpus, actors=actors, gpus_per_actor=gpus_per_actor
    )
    return distributed.RayExecutor(options)
