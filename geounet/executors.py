"""Executors by name: ``local`` (in-process, :func:`geounet.pipeline.local_results`) or ``ray``.

The one place that turns an executor name (``--executor``, ``execution.executor``, the
notebook's ``executor=``) into the function that yields a job's tile results; Ray is
imported only when ``ray`` is chosen (:class:`geounet.distributed.RayExecutor`).
"""

from __future__ import annotations

from geounet import pipeline
from geounet.errors import ConfigError

EXECUTORS = ("local", "ray")


def results_fn(
    name: str,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    actors: int | None = None,
    gpus_per_actor: float | None = None,
    key: str = "executor",
) -> pipeline.ResultsFn:
    """The executor called ``name``; the Ray settings size a :class:`~geounet.distributed.RayOptions`.

    ``key`` is how the caller names the choice in messages (``--executor``,
    ``execution.executor``...).

    Raises:
        ConfigError: on an unknown name.

    Example:
        >>> results_fn("local") is pipeline.local_results
        True
    """
    if name == "local":
        return pipeline.local_results
    if name == "ray":
        from geounet import distributed

        options = distributed.RayOptions(
            address=address, num_cpus=num_cpus, actors=actors, gpus_per_actor=gpus_per_actor
        )
        return distributed.RayExecutor(options)
    raise ConfigError(f"{key}={name!r} is unknown; use one of {', '.join(EXECUTORS)}")
