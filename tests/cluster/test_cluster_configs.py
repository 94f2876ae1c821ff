"""Every shipped cluster file loads and passes Ray's offline checks; the checker's errors name the
file and the key. No network, no cloud credentials: runs in a few seconds."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import ray
import yaml

from tune.storage.cluster_check import (
    fits,
    node_resources,
    validate_cluster_yaml,
    validate_kuberay_manifest,
)

CLUSTER_DIR = Path(__file__).resolve().parents[2] / "cluster"
CLUSTER_FILES = sorted(CLUSTER_DIR.glob("*.yaml"))
GPU_YAML = CLUSTER_DIR / "gpu.yaml"
KUBERAY_YAML = CLUSTER_DIR / "kuberay.yaml"


def _is_kuberay(path: Path) -> bool:
    return yaml.safe_load(path.read_text()).get("kind") == "RayCluster"


def _validate(path: Path) -> dict:
    return validate_kuberay_manifest(path) if _is_kuberay(path) else validate_cluster_yaml(path)


def _images(path: Path) -> list[str]:
    doc = yaml.safe_load(path.read_text())
    if _is_kuberay(path):
        groups = [doc["spec"]["headGroupSpec"], *doc["spec"].get("workerGroupSpecs", [])]
        return [c["image"] for g in groups for c in g["template"]["spec"]["containers"]]
    docker = doc.get("docker", {})
    return [docker[k] for k in ("image", "head_image", "worker_image") if k in docker]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No sockets and no AWS credentials: the checks must not need either."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"cluster check tried the network: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


def test_shipped_files_present():
    assert GPU_YAML in CLUSTER_FILES and KUBERAY_YAML in CLUSTER_FILES


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_cluster_file_validates_offline(path, offline):
    assert _validate(path)


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_header_names_its_command(path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    if _is_kuberay(path):
        command = f"kubectl apply -f cluster/{path.name}"
    else:
        command = f"ray up cluster/{path.name}"
    assert command in text, f"{path.name}: header comment must give `{command}`"


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_image_pins_installed_ray(path):
    images = _images(path)
    assert images, f"{path.name}: no image found"
    for image in images:
        assert f":{ray.__version__}-" in image, f"{path.name}: {image} is not Ray {ray.__version__}"
        # rayproject/ray-ml is no longer published.
        assert image.startswith("rayproject/ray:"), f"{path.name}: {image}"
        assert image.endswith("-gpu"), image


def test_unknown_top_level_key_rejected(tmp_path):
    config = yaml.safe_load(GPU_YAML.read_text())
    config["max_worker"] = 3  # typo of max_workers
    broken = tmp_path / "typo.yaml"
    broken.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="max_worker") as info:
        validate_cluster_yaml(broken)
    assert str(broken) in str(info.value)


def test_missing_head_node_type_rejected(tmp_path):
    config = yaml.safe_load(GPU_YAML.read_text())
    del config["head_node_type"]
    broken = tmp_path / "headless.yaml"
    broken.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="head_node_type") as info:
        validate_cluster_yaml(broken)
    assert str(broken) in str(info.value)


def test_schema_error_names_key_path(tmp_path):
    config = yaml.safe_load(GPU_YAML.read_text())
    config["available_node_types"]["gpu_1x"]["resources"]["GPU"] = 0.5
    broken = tmp_path / "half_gpu.yaml"
    broken.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=r"available_node_types\.gpu_1x\.resources\.GPU"):
        validate_cluster_yaml(broken)


def test_kuberay_min_above_max_rejected(tmp_path):
    manifest = yaml.safe_load(KUBERAY_YAML.read_text())
    group = manifest["spec"]["workerGroupSpecs"][0]
    group["minReplicas"] = group["maxReplicas"] + 1
    broken = tmp_path / "replicas.yaml"
    broken.write_text(yaml.safe_dump(manifest))
    with pytest.raises(ValueError, match=r"spec\.workerGroupSpecs\[0\]\.minReplicas") as info:
        validate_kuberay_manifest(broken)
    assert str(broken) in str(info.value)


def test_kuberay_unquoted_start_param_rejected(tmp_path):
    manifest = yaml.safe_load(KUBERAY_YAML.read_text())
    manifest["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    broken = tmp_path / "unquoted.yaml"
    broken.write_text(yaml.safe_dump(manifest))
    with pytest.raises(ValueError, match=r"spec\.headGroupSpec\.rayStartParams\.num-cpus"):
        validate_kuberay_manifest(broken)


def test_node_resources_aws():
    resources = node_resources(validate_cluster_yaml(GPU_YAML))
    assert resources["gpu_1x"]["GPU"] == 1
    assert resources["gpu_8x"]["GPU"] == 8
    assert resources["head"] == {"CPU": 0}


def test_node_resources_kuberay():
    resources = node_resources(validate_kuberay_manifest(KUBERAY_YAML))
    assert resources["gpu-1x"]["GPU"] == 1
    assert resources["gpu-8x"]["GPU"] == 8
    assert resources["headgroup"]["CPU"] == 0
    assert "GPU" not in resources["headgroup"]


@pytest.mark.parametrize("path", [GPU_YAML, KUBERAY_YAML], ids=lambda p: p.name)
def test_fits(path):
    nodes = node_resources(_validate(path))
    assert fits({"GPU": 1, "CPU": 4}, nodes)
    assert fits({"gpu": 1, "cpu": 4}, nodes)  # tune.with_resources spelling
    assert fits({"GPU": 8}, nodes)
    assert not fits({"GPU": 16}, nodes)
    assert not fits({"GPU": 1, "CPU": 500}, nodes)


def test_fits_rejects_bad_amount():
    with pytest.raises(ValueError, match="GPU"):
        fits({"GPU": -1}, {"a": {"GPU": 1.0}})


@pytest.mark.parametrize("space_file", sorted((CLUSTER_DIR.parent / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
@pytest.mark.parametrize("cluster_file", ["gpu.yaml", "kuberay.yaml"])
def test_node_types_can_host_every_trial_declared_in_search_spaces(space_file, cluster_file):
    """Each backbone's per-trial resources in every shipped search space fit some node type."""
    path = CLUSTER_DIR / cluster_file
    config = validate_cluster_yaml(path) if cluster_file == "gpu.yaml" else validate_kuberay_manifest(path)
    nodes = node_resources(config)
    space = yaml.safe_load(space_file.read_text())  # raw: the real spaces need weights to validate
    for backbone, spec in space["backbones"].items():
        wanted = {k: v for k, v in (spec.get("resources") or {"cpu": 1}).items() if k in ("cpu", "gpu")}
        assert fits(wanted, nodes), f"{space_file.name}: {backbone} needs {wanted}; {cluster_file} has {nodes}"
