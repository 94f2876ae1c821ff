"""Offline checks of the shipped cluster files (``cluster/*.yaml``) and resource fit.

Nothing here talks to AWS or Kubernetes. Two kinds of file are understood:

* a ``ray up`` cluster config (``cluster/gpu.yaml``): checked the way ``ray up`` checks it before it
  contacts the cloud, i.e. Ray's ``prepare_config`` (merge with the provider's ``defaults.yaml``,
  docker and per-type worker defaults) then ``validate_config`` (``ray-schema.json`` plus
  head-node-type and worker-count rules). ``node_config`` contents (instance type, AMI, IAM
  profile) are not checked: only AWS can.
* a KubeRay ``RayCluster`` manifest (``cluster/kuberay.yaml``): structural checks with the key path
  of each problem, then the same derivation of node types the in-tree autoscaler runs on the head
  pod (``_derive_autoscaling_config_from_ray_cr``), which also runs ``validate_config``.

``node_resources`` and ``fits`` check that one trial's resources (e.g. ``{"CPU": 8, "GPU": 1}``)
fit on some node type of a cluster file. The search-space loader does not know which cluster a
search will run on, so the check runs offline: ``tests/cluster/test_cluster_configs.py`` holds
every shipped search space against every shipped cluster file.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["validate_cluster_yaml", "validate_kuberay_manifest", "node_resources", "fits"]

# Keys a `ray up` file must set itself. Ray fills missing top-level keys from its example
# defaults.yaml, which for AWS means e.g. `setup_commands` that pip-install a Ray nightly wheel,
# or a head type `ray.head.default` that the file does not define: an error here, not a surprise.
_REQUIRED_RAY_UP_KEYS = (
    "cluster_name",
    "provider",
    "max_workers",
    "available_node_types",
    "head_node_type",
    "setup_commands",
)

_KUBERAY_API_VERSION = "ray.io/v1"
# Node-type name Ray's KubeRay autoscaler gives the head group.
_KUBERAY_HEAD_TYPE = "headgroup"
# Tune's resource dicts accept lower-case cpu/gpu too (tune.with_resources).
_RESOURCE_ALIASES = {"cpu": "CPU", "gpu": "GPU"}


def _load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the cluster file ({exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected a mapping at the top level, got {type(data).__name__}"
        )
    return data


def _ray_error_text(exc: BaseException) -> str:
    """Ray's message, with the key path for jsonschema errors (which name none by default)."""
    import jsonschema

    if isinstance(exc, jsonschema.ValidationError):
        where = ".".join(str(p) for p in exc.absolute_path) or "<top level>"
        return f"at {where}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def validate_cluster_yaml(path: str | Path) -> dict[str, Any]:
    """Check a ``ray up`` cluster file offline, as ``ray up`` does before contacting the cloud.

    Args:
        path: the YAML file.

    Returns:
        The prepared config: the file merged with Ray's provider defaults, every node type with
        ``min_workers``/``max_workers`` filled, setup commands merged into head/worker lists.

    Raises:
        ValueError: naming the file and Ray's message (with the key path for schema errors).
    """
    import jsonschema
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    path = Path(path)
    raw = _load_yaml(path)
    provider = raw.get("provider")
    provider_type = provider.get("type") if isinstance(provider, dict) else None
    missing = [key for key in _REQUIRED_RAY_UP_KEYS if key not in raw]
    if missing:
        raise ValueError(
            f"{path}: missing top-level key(s) {missing}; set them in the file, or Ray fills "
            f"them from its own example defaults for provider {provider_type!r}"
        )
    if provider_type in ("kuberay", "local"):
        # prepare_config returns kuberay configs untouched and resolves local ones against the
        # machine it runs on: neither is a `ray up` cloud file this check can vouch for.
        raise ValueError(
            f"{path}: provider.type {provider_type!r} is not checked here; KubeRay clusters are "
            "RayCluster manifests (validate_kuberay_manifest)"
        )
    try:
        prepared = prepare_config(copy.deepcopy(raw))
        validate_config(prepared)
    except (
        jsonschema.ValidationError,
        ValueError,
        KeyError,
        TypeError,
        AssertionError,
        RuntimeError,
        NotImplementedError,
    ) as exc:
        raise ValueError(
            f"{path}: rejected by Ray {ray.__version__}'s cluster-config check: "
            f"{_ray_error_text(exc)}"
        ) from exc
    # Ray checks min_workers only against the global max_workers, not per node type.
    for name, spec in prepared["available_node_types"].items():
        if spec["min_workers"] > spec["max_workers"]:
            raise ValueError(
                f"{path}: available_node_types.{name}.min_workers ({spec['min_workers']}) > "
                f"max_workers ({spec['max_workers']}); lower min_workers or raise max_workers"
            )
    return prepared


def _require(cond: bool, path: Path, key: str, problem: str) -> None:
    if not cond:
        raise ValueError(f"{path}: {key}: {problem}")


def _check_pod_template(group: Any, path: Path, key: str) -> None:
    _require(isinstance(group, dict), path, key, "must be a mapping")
    params = group.get("rayStartParams", {})
    _require(
        isinstance(params, dict),
        path,
        f"{key}.rayStartParams",
        "must be a mapping of flag name to string value",
    )
    for flag, value in params.items():
        # The RayCluster CRD types rayStartParams as map[string]string: the API server refuses
        # `num-cpus: 0` and needs `num-cpus: "0"`.
        _require(
            isinstance(value, str),
            path,
            f"{key}.rayStartParams.{flag}",
            f"must be a string (quote it: {flag}: \"{value}\")",
        )
    containers = (group.get("template") or {}).get("spec", {}).get("containers")
    _require(
        isinstance(containers, list) and len(containers) > 0,
        path,
        f"{key}.template.spec.containers",
        "must be a non-empty list (the Ray container comes first)",
    )
    image = containers[0].get("image") if isinstance(containers[0], dict) else None
    _require(
        isinstance(image, str) and image.strip() != "",
        path,
        f"{key}.template.spec.containers[0].image",
        "must name the Ray image, e.g. rayproject/ray:<ray version>-py311-gpu",
    )


def _check_worker_group(group: Any, path: Path, key: str) -> str:
    _check_pod_template(group, path, key)
    name = group.get("groupName")
    _require(
        isinstance(name, str) and name != "", path, f"{key}.groupName", "must be a non-empty string"
    )
    counts = {}
    for field in ("replicas", "minReplicas", "maxReplicas"):
        value = group.get(field)
        _require(
            isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            path,
            f"{key}.{field}",
            f"must be a non-negative integer, got {value!r}",
        )
        counts[field] = value
    lo, n, hi = counts["minReplicas"], counts["replicas"], counts["maxReplicas"]
    _require(
        lo <= hi,
        path,
        f"{key}.minReplicas",
        f"minReplicas ({lo}) > maxReplicas ({hi}) in group {name!r}; "
        "need minReplicas <= replicas <= maxReplicas",
    )
    _require(
        lo <= n <= hi,
        path,
        f"{key}.replicas",
        f"replicas ({n}) outside [minReplicas, maxReplicas] = [{lo}, {hi}] in group {name!r}",
    )
    return name


def validate_kuberay_manifest(path: str | Path) -> dict[str, Any]:
    """Check a KubeRay ``RayCluster`` manifest offline.

    Args:
        path: the YAML file (one document).

    Returns:
        The manifest as loaded.

    Raises:
        ValueError: naming the file and the key path of the problem, e.g.
            ``spec.workerGroupSpecs[0].minReplicas``.
    """
    import jsonschema

    path = Path(path)
    manifest = _load_yaml(path)
    _require(
        manifest.get("apiVersion") == _KUBERAY_API_VERSION,
        path,
        "apiVersion",
        f"must be {_KUBERAY_API_VERSION!r}, got {manifest.get('apiVersion')!r}",
    )
    _require(
        manifest.get("kind") == "RayCluster",
        path,
        "kind",
        f"must be 'RayCluster', got {manifest.get('kind')!r}",
    )
    name = (manifest.get("metadata") or {}).get("name")
    _require(
        isinstance(name, str) and name != "", path, "metadata.name", "must be a non-empty string"
    )
    spec = manifest.get("spec")
    _require(isinstance(spec, dict), path, "spec", "must be a mapping")
    _check_pod_template(spec.get("headGroupSpec"), path, "spec.headGroupSpec")
    groups = spec.get("workerGroupSpecs", [])
    _require(isinstance(groups, list), path, "spec.workerGroupSpecs", "must be a list")
    seen: set[str] = set()
    for i, group in enumerate(groups):
        key = f"spec.workerGroupSpecs[{i}]"
        group_name = _check_worker_group(group, path, key)
        _require(
            group_name not in seen, path, f"{key}.groupName", f"duplicate group {group_name!r}"
        )
        seen.add(group_name)

    # What the autoscaler on the head pod derives from this manifest (resources per group from
    # rayStartParams or container limits), validated against Ray's schema.
    try:
        _derive_kuberay_autoscaling_config(manifest)
    except (jsonschema.ValidationError, ValueError, KeyError, TypeError, AssertionError) as exc:
        raise ValueError(
            f"{path}: Ray's KubeRay autoscaler cannot derive node types from this manifest: "
            f"{_ray_error_text(exc)}"
        ) from exc
    return manifest


def _derive_kuberay_autoscaling_config(manifest: Mapping[str, Any]) -> dict[str, Any]:
    from ray.autoscaler._private.kuberay.autoscaling_config import (
        _derive_autoscaling_config_from_ray_cr,
    )

    cr = copy.deepcopy(dict(manifest))
    # kubectl fills the namespace on apply; the derivation needs one.
    cr.setdefault("metadata", {}).setdefault("namespace", "default")
    cr["spec"].setdefault("workerGroupSpecs", [])
    return _derive_autoscaling_config_from_ray_cr(cr)


def node_resources(config: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Ray resources each node type advertises.

    Args:
        config: a ``ray up`` config (raw or as returned by ``validate_cluster_yaml``) or a KubeRay
            ``RayCluster`` manifest (as returned by ``validate_kuberay_manifest``).

    Returns:
        ``{node type: {resource: amount}}``, e.g. ``{"gpu_1x": {"CPU": 8.0, "GPU": 1.0}}``. For
        ``ray up`` files these are the declared ``resources`` (a type that declares none gets
        ``{}``: AWS autodetection only happens during ``ray up``). For KubeRay the head is
        ``"headgroup"`` and GPU comes from ``nvidia.com/gpu`` limits unless ``num-gpus`` is set
        in rayStartParams; ``memory`` is in bytes.
    """
    if config.get("kind") == "RayCluster":
        derived = _derive_kuberay_autoscaling_config(config)
        node_types = derived["available_node_types"]
    else:
        node_types = config.get("available_node_types")
        if not isinstance(node_types, Mapping):
            raise ValueError(
                "config has neither kind: RayCluster nor available_node_types; pass a loaded "
                "cluster/*.yaml"
            )
    return {
        name: {res: float(amount) for res, amount in (spec.get("resources") or {}).items()}
        for name, spec in node_types.items()
    }


def fits(
    resources_per_trial: Mapping[str, float],
    node_types: Mapping[str, Mapping[str, float]],
) -> bool:
    """Whether one trial's resources fit on at least one node type.

    Args:
        resources_per_trial: e.g. ``{"CPU": 8, "GPU": 1}``; ``cpu``/``gpu`` are accepted as in
            ``tune.with_resources``; amounts are non-negative numbers (``memory`` in bytes).
        node_types: as returned by ``node_resources``.

    Returns:
        True if some node type has at least the requested amount of every resource.
    """
    wanted: dict[str, float] = {}
    for res, amount in resources_per_trial.items():
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
            raise ValueError(
                f"resources_per_trial[{res!r}] = {amount!r}: must be a non-negative number, "
                "e.g. {'CPU': 8, 'GPU': 1}"
            )
        key = _RESOURCE_ALIASES.get(res, res)
        if key in wanted:
            raise ValueError(f"resources_per_trial gives {key} twice (as {key!r} and {res!r})")
        wanted[key] = float(amount)
    return any(
        all(have.get(res, 0.0) >= amount for res, amount in wanted.items() if amount > 0)
        for have in node_types.values()
    )
