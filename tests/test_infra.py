"""The deployment files in infra/ (Dockerfiles, KubeRay, Ray cluster launcher), validated offline.

- Kubernetes objects against the Kubernetes JSON schemas shipped by ``kubernetes-validate``
  (strict: unknown fields fail). RayCluster/RayJob are KubeRay CRDs whose schema no offline
  package ships: their required fields and types are checked here, and their pod templates
  against the core ``PodTemplate`` schema.
- The Ray cluster launcher YAML with Ray's own schema and validator (``ray up`` runs the same).
- The RayJob entrypoint parses with geounet's CLI (options and their types).
- Dockerfiles: base, pinned torch from the right wheel index, every COPY source exists.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (test extra)")

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
K8S = "1.32.0"
IMAGE_CPU = "ghcr.io/geounet/geounet:latest"
IMAGE_CUDA = "ghcr.io/geounet/geounet:latest-cuda"


def _docs(path: Path) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}


@pytest.fixture(scope="module")
def raycluster_docs() -> dict[str, dict[str, Any]]:
    return _docs(INFRA / "kuberay" / "raycluster.yaml")


@pytest.fixture(scope="module")
def rayjob() -> dict[str, Any]:
    docs = _docs(INFRA / "kuberay" / "rayjob.yaml")
    assert set(docs) == {"RayJob"}
    return docs["RayJob"]


def _pod_template(template: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}


def check_ray_cluster_spec(spec: dict[str, Any]) -> None:
    """What KubeRay needs of a RayClusterSpec (types as in its CRD), plus geounet's conventions."""
    import ray

    assert spec["rayVersion"] == ray.__version__  # the images install this Ray (pyproject: ray>=2.40)
    head = spec["headGroupSpec"]
    groups = [("head", head), *[(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]]
    assert len({name for name, _ in groups}) == len(groups), "groupName must be unique"
    for name, group in groups:
        params = group["rayStartParams"]
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()), (
            f"{name}: rayStartParams is a map of strings in KubeRay's CRD"
        )
        kv.validate(_pod_template(group["template"], name), K8S, strict=True)
        pod = group["template"]["spec"]
        mounts = {m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        assert mounts <= {v["name"] for v in pod.get("volumes", [])}, f"{name}: mount of a missing volume"
        container = pod["containers"][0]
        assert {"name": "RAY_AUTH_MODE", "value": "disabled"} in container["env"]
        gpus = int(container["resources"]["limits"].get("nvidia.com/gpu", "0"))
        assert container["image"] == (IMAGE_CUDA if gpus else IMAGE_CPU), (
            f"{name}: GPU pods need the CUDA image"
        )
        if name != "head":
            assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
            cpus = str(container["resources"]["limits"]["cpu"])
            assert params["num-cpus"] == cpus, f"{name}: Ray must see the pod's CPU limit, not the node's"


def test_raycluster_manifest_is_valid(raycluster_docs: dict[str, dict[str, Any]]) -> None:
    assert set(raycluster_docs) == {"PersistentVolumeClaim", "RayCluster"}
    kv.validate(raycluster_docs["PersistentVolumeClaim"], K8S, strict=True)
    rc = raycluster_docs["RayCluster"]
    assert (rc["apiVersion"], rc["kind"]) == ("ray.io/v1", "RayCluster")
    assert rc["metadata"]["name"] and rc["metadata"]["namespace"] == "geounet"
    check_ray_cluster_spec(rc["spec"])
    groups = {g["groupName"] for g in rc["spec"]["workerGroupSpecs"]}
    assert groups == {"gpu", "cpu"}  # GPU actors, and the CPU fallback / read capacity
    ports = {
        p["containerPort"] for p in rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert {6379, 8265} <= ports  # GCS and the job-submission / dashboard API


def test_rayjob_manifest_is_valid(rayjob: dict[str, Any], raycluster_docs: dict[str, dict[str, Any]]) -> None:
    assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")
    spec = rayjob["spec"]
    allowed = {
        "entrypoint", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "activeDeadlineSeconds",
        "backoffLimit", "submissionMode", "rayClusterSpec", "runtimeEnvYAML", "suspend", "submitterPodTemplate",
    }  # fmt: skip
    assert set(spec) <= allowed
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] >= 1
    check_ray_cluster_spec(spec["rayClusterSpec"])
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"]
    }
    assert claims == {raycluster_docs["PersistentVolumeClaim"]["metadata"]["name"]}


def test_rayjob_entrypoint_parses_with_the_cli(rayjob: dict[str, Any]) -> None:
    from geounet.cli import cli

    args = shlex.split(rayjob["spec"]["entrypoint"])
    assert args[:2] == ["geounet", "predict"]
    group_ctx = cli.make_context("geounet", args[1:], resilient_parsing=False)
    command = cli.get_command(group_ctx, args[1])
    assert command is not None
    ctx = command.make_context("predict", args[2:])  # raises on an unknown option or a bad value
    assert ctx.params["executor"] == "ray" and ctx.params["gpus_per_actor"] == 1.0
    assert ctx.params["out_dir"].startswith("/data/")  # on the shared volume: retries resume


def test_the_validators_reject_mistakes(rayjob: dict[str, Any]) -> None:
    """Negative controls: a typo in a pod template and a non-string rayStartParams value fail."""
    bad = copy.deepcopy(rayjob["spec"]["rayClusterSpec"])
    bad["headGroupSpec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kv.ValidationError):
        check_ray_cluster_spec(bad)
    bad = copy.deepcopy(rayjob["spec"]["rayClusterSpec"])
    bad["workerGroupSpecs"][0]["rayStartParams"]["num-cpus"] = 8
    with pytest.raises(AssertionError, match="map of strings"):
        check_ray_cluster_spec(bad)


def test_cluster_launcher_yaml_passes_rays_validator() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((INFRA / "cluster" / "aws.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # Ray's JSON schema + node-type checks
    types = config["available_node_types"]
    assert types["gpu_worker"]["resources"]["GPU"] >= 1
    assert config["docker"]["worker_image"] == IMAGE_CUDA and config["docker"]["image"] == IMAGE_CPU
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])
    bad = copy.deepcopy(config)
    bad["head_node_type"] = "headd"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(bad))


@pytest.mark.parametrize(("name", "index"), [("Dockerfile", "/whl/cpu"), ("Dockerfile.cuda", "/whl/cu")])
def test_dockerfiles(name: str, index: str) -> None:
    text = (INFRA / "docker" / name).read_text()
    lines = [
        ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines() if ln.strip() and not ln.startswith("#")
    ]
    instructions = [ln.split()[0] for ln in lines]
    assert instructions[0] == "FROM" and "python:3.11" in lines[0]
    assert set(instructions) <= {"FROM", "ARG", "ENV", "RUN", "WORKDIR", "COPY", "USER", "ENTRYPOINT", "CMD"}
    assert re.search(r"ARG TORCH_VERSION=2\.13\.0", text) and f"download.pytorch.org{index}" in text
    torch_line = next(ln for ln in lines if "torch==" in ln)
    assert lines.index(torch_line) < next(
        i for i, ln in enumerate(lines) if ln.startswith("RUN pip install .")
    )
    for line in lines:
        if line.startswith("COPY"):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist in the repository"
    assert "USER ray" in lines and lines[-2].startswith("ENTRYPOINT")


def test_readme_documents_each_file() -> None:
    text = (INFRA / "README.md").read_text()
    for path in (
        "docker/Dockerfile",
        "docker/Dockerfile.cuda",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob.yaml",
    ):
        assert path in text
    assert "cluster/aws.yaml" in text and "ray job submit" in text
