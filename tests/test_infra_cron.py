"""The scheduling examples in infra/cron/, validated offline.

Kubernetes objects: against the Kubernetes 1.32 JSON schemas shipped by ``kubernetes-validate``
(strict: unknown fields fail). The RayJob (a KubeRay CRD, whose schema no offline package ships):
its required fields and types, plus its pod templates against the core PodTemplate schema. The
embedded monitor config loads with geounet's loader and the entrypoint parses with geounet's CLI.
systemd units: ``systemd-analyze verify`` (and a parse for the required keys).
"""

from __future__ import annotations

import configparser
import copy
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from croniter import croniter

kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (test extra)")

CRON = Path(__file__).resolve().parents[1] / "infra" / "cron"
K8S = "1.32.0"


@pytest.fixture(scope="module")
def docs() -> dict[str, dict[str, Any]]:
    found = [d for d in yaml.safe_load_all((CRON / "k8s" / "monitor-cronjob.yaml").read_text()) if d]
    return {d["kind"]: d for d in found}


def test_every_kubernetes_object_is_valid(docs: dict[str, dict[str, Any]]) -> None:
    assert set(docs) == {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "PersistentVolumeClaim",
        "ConfigMap",
        "CronJob",
    }
    for doc in docs.values():
        kv.validate(doc, K8S, strict=True)


def test_the_validator_rejects_a_typo(docs: dict[str, dict[str, Any]]) -> None:
    bad = copy.deepcopy(docs["CronJob"])
    bad["spec"]["concurrencyPolcy"] = "Forbid"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S, strict=True)


def test_cronjob_never_overlaps_and_submits_the_rayjob(docs: dict[str, dict[str, Any]]) -> None:
    spec = docs["CronJob"]["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert croniter.is_valid(spec["schedule"])
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    script = pod["containers"][0]["args"][0]
    assert "kubectl create -f /config/rayjob.yaml" in script and 'test "$status" = SUCCEEDED' in script
    assert {"create", "get", "watch"} <= set(docs["Role"]["rules"][0]["verbs"])
    assert docs["Role"]["rules"][0]["resources"] == ["rayjobs"]


def _rayjob(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(docs["ConfigMap"]["data"]["rayjob.yaml"])


def test_rayjob_has_what_kuberay_requires(docs: dict[str, dict[str, Any]]) -> None:
    job = _rayjob(docs)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    allowed = {
        "entrypoint", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "activeDeadlineSeconds",
        "backoffLimit", "submissionMode", "rayClusterSpec", "runtimeEnvYAML", "suspend", "submitterPodTemplate",
    }  # fmt: skip
    assert set(spec) <= allowed and isinstance(spec["entrypoint"], str)
    assert spec["shutdownAfterJobFinishes"] is True and spec["submissionMode"] in ("K8sJobMode", "HTTPMode")
    cluster = spec["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for g in cluster["workerGroupSpecs"]:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] and g["groupName"]
    for tmpl in templates:
        kv.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": tmpl},
                    K8S, strict=True)  # fmt: skip
    mounted = {v["configMap"]["name"] for v in templates[0]["spec"]["volumes"] if "configMap" in v}
    assert mounted == {docs["ConfigMap"]["metadata"]["name"]}


def test_entrypoint_is_a_real_geounet_command_on_the_shipped_config(
    docs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    from geounet.cli import cli
    from geounet.config import load_monitor_config
    from geounet.overrides import parse_overrides

    argv = shlex.split(_rayjob(docs)["spec"]["entrypoint"])
    assert argv[:3] == ["geounet", "monitor", "run"]
    argv = [a.replace("$GEOUNET_STATE_URL", "postgresql://u@db/g") for a in argv]
    ctx = cli.make_context("geounet", argv[1:], resilient_parsing=True)
    assert ctx.protected_args[0] == "monitor"
    config = tmp_path / "crop-monitoring.yaml"
    config.write_text(docs["ConfigMap"]["data"]["crop-monitoring.yaml"])
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    cfg = load_monitor_config(config, overrides=parse_overrides(sets))
    assert cfg.state.url == "postgresql://u@db/g" and cfg.execution.executor == "ray"


def _unit(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(path.read_text())
    return cp


def test_systemd_units_parse_with_the_right_keys() -> None:
    service = _unit(CRON / "systemd" / "geounet-monitor.service")
    timer = _unit(CRON / "systemd" / "geounet-monitor.timer")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"].split()[1:4] == [
        "monitor",
        "run",
        "/etc/geounet/crop-monitoring.yaml",
    ]
    assert timer["Timer"]["Unit"] == "geounet-monitor.service" and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    import getpass

    geounet_bin = Path(sys.executable).parent / "geounet"
    for name in ("geounet-monitor.service", "geounet-monitor.timer"):
        text = (CRON / "systemd" / name).read_text()
        # the installed paths and user of the example, mapped onto this machine
        text = text.replace("/opt/geounet/.venv/bin/geounet", str(geounet_bin))
        text = text.replace("WorkingDirectory=/opt/geounet", f"WorkingDirectory={tmp_path}")
        text = text.replace("User=geounet", f"User={getpass.getuser()}").replace("Group=geounet", "")
        (tmp_path / name).write_text(text)
    rc, problems = _verify(tmp_path)
    assert rc == 0 and not problems, problems
    # negative control: systemd-analyze exits 0 on a bad value, so the warnings are what we check
    bad = tmp_path / "geounet-monitor.service"
    bad.write_text(bad.read_text().replace("Type=oneshot", "Type=oneshott"))
    assert _verify(tmp_path)[1]


def _verify(folder: Path) -> tuple[int, list[str]]:
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(folder / "geounet-monitor.timer"),
         str(folder / "geounet-monitor.service")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return proc.returncode, [line for line in proc.stderr.splitlines() if "geounet-monitor" in line]
