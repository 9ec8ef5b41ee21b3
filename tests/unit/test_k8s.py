"""k8s/: every document deserializes through the Kubernetes client's models, and the Deployment
serves the way docker/entrypoint.sh does: plugin library preloaded, probes on Triton's health
endpoints, GPUs requested, the server bound to every interface of the pod."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

kubernetes = pytest.importorskip("kubernetes")

ROOT = Path(__file__).resolve().parents[2]
MODELS = {("apps/v1", "Deployment"): "V1Deployment", ("v1", "Service"): "V1Service",
          ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim"}


def documents():
    return [document for path in sorted((ROOT / "k8s").glob("*.yaml"))
            for document in yaml.safe_load_all(path.read_text()) if document]


def deserialize(document):
    # The client's own deserializer, as for an API response: typed models that refuse a missing
    # required field or a value of the wrong type.
    kind = MODELS[(document["apiVersion"], document["kind"])]
    return kubernetes.client.ApiClient()._ApiClient__deserialize(document, kind)


@pytest.fixture(scope="module")
def objects():
    return {type(obj).__name__: obj for obj in map(deserialize, documents())}


def test_every_document_is_a_kubernetes_object_the_client_reads(objects):
    assert sorted(objects) == sorted(MODELS.values())
    with pytest.raises(ValueError, match="name"):
        deserialize({"apiVersion": "apps/v1", "kind": "Deployment",
                     "spec": {"selector": {}, "template": {"spec": {"containers": [{"image": "x"}]}}}})


def test_the_deployment_runs_the_images_entrypoint_with_the_plugin_library_and_gpus(objects):
    (container,) = objects["V1Deployment"].spec.template.spec.containers
    assert container.image.endswith("plugserve:trt") and container.command == ["docker/entrypoint.sh"]
    assert not container.args  # arguments would replace serving (see the entrypoint)
    env = {item.name: item.value for item in container.env}
    assert env["PLUGSERVE_PLUGIN_LIBRARY"] == "/opt/plugserve/plugins/build/libplugserve.so"
    assert env["PLUGSERVE_REPOSITORY"].startswith("/var/lib/plugserve/")
    gpus = container.resources.limits["nvidia.com/gpu"]
    assert container.resources.requests["nvidia.com/gpu"] == gpus and int(gpus) >= 1
    assert {port.name: port.container_port for port in container.ports} == {"http": 8000, "grpc": 8001,
                                                                           "metrics": 8002}
    probes = {name: getattr(container, f"{name}_probe").http_get for name in ("readiness", "liveness", "startup")}
    assert (probes["readiness"].path, probes["readiness"].port) == ("/v2/health/ready", "http")
    assert (probes["liveness"].path, probes["liveness"].port) == ("/v2/health/live", "http")
    mounts = {mount.mount_path for mount in container.volume_mounts}
    assert {"/var/lib/plugserve", "/dev/shm"} <= mounts
    claims = [v.persistent_volume_claim.claim_name for v in objects["V1Deployment"].spec.template.spec.volumes
              if v.persistent_volume_claim]
    assert claims == [objects["V1PersistentVolumeClaim"].metadata.name]


def test_the_server_listens_on_every_interface_of_the_pod_and_the_service_reaches_its_ports(objects):
    # `plugserve serve` binds 127.0.0.1 by default, unreachable from the probes and the Service.
    serve = [line for line in (ROOT / "docker" / "entrypoint.sh").read_text().splitlines()
             if line.startswith("exec plugserve serve")]
    assert len(serve) == 1 and "--host 0.0.0.0" in serve[0]
    service, deployment = objects["V1Service"], objects["V1Deployment"]
    assert service.spec.selector == deployment.spec.template.metadata.labels
    assert {(port.port, port.target_port) for port in service.spec.ports} == {(8000, "http"), (8001, "grpc"),
                                                                             (8002, "metrics")}
