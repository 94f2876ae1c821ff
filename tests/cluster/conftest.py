"""Fixtures for the cluster tests: a real three-node Ray cluster on loopback, a local S3 server
(moto), and a helper that runs ``python -m tune.search`` as a subprocess.

Both fixtures clean up whatever happens in the tests: the Ray nodes are stopped by the process
ids of what they started (found by their private temp dir, never ``ray stop``, which would stop
every Ray on the machine), the S3 server with the module.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
# Worker nodes get their own loopback addresses, so Ray's `node_ip` tells the nodes apart in
# every trial's results (all of 127.0.0.0/8 is the loopback interface on Linux).
WORKER_IPS = ("127.0.0.2", "127.0.0.3")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def base_env(**extra: str) -> dict[str, str]:
    """The environment of every process these tests start: private cache, no network, one thread."""
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline",
               HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env["DPDMD_CACHE"] = os.environ["DPDMD_CACHE"]  # tests/conftest.py: a per-session directory
    env.pop("RAY_ADDRESS", None)  # never join a cluster by accident
    env.update(extra)
    return env


def tiny_space(name: str, *, iterations: int, batch_size: int, eval_every: int) -> dict:
    """A two-trial digits-flow grid (K 2 and 5, lambda 0.5) small enough for a cluster test; no
    quality floor (a few updates: the cluster is under test, not the floor), FIFO, no W&B."""
    return {"name": name, "method": "grid", "seed": 0, "max_concurrent": 2, "baseline": False,
            "backbones": {"digits-flow": {"resources": {"cpu": 1}}},
            "parameters": {"anchor_k": {"values": [2, 5]}, "lambda_div": {"values": [0.5]}},
            "train": {"iterations": iterations, "batch_size": batch_size, "teacher_steps": 10},
            "eval": {"prompts": ["3", "7"], "seeds_per_prompt": 4, "every": eval_every},
            "objective": {"min_quality": 0.0}, "scheduler": {"type": "fifo"}, "wandb": {"enabled": False}}


def write_space(path: Path, space: dict) -> Path:
    path.write_text(yaml.safe_dump(space))
    return path


def run_search(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m tune.search ARGS`` in a subprocess; fails the test with the output's tail."""
    proc = subprocess.run([sys.executable, "-m", "tune.search", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"tune.search {' '.join(args)} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-6000:]}")
    return proc


# --- a three-node Ray cluster on one machine ----------------------------------------------------

@dataclass
class LocalCluster:
    address: str  # 127.0.0.1:PORT, for --address
    temp_dir: Path
    env: dict[str, str]
    nodes: list[dict] = field(default_factory=list)  # {"node_id", "ip", "head", "cpus"} per alive node

    @property
    def head(self) -> dict:
        return next(n for n in self.nodes if n["head"])

    def python(self, code: str, timeout: float = 60) -> object:
        """Run CODE as a driver of this cluster (``ray`` imported and connected); it prints one JSON line."""
        script = f"import json, ray\nray.init(address={self.address!r}, log_to_driver=False)\n" + textwrap.dedent(code)
        proc = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])


def _loopback_alias_works(ip: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


def _ray_start(*args: str, env: dict[str, str]) -> None:
    proc = subprocess.run([RAY, "start", *args], env=env, capture_output=True, text=True, timeout=120,
                          start_new_session=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")


def stop_processes_under(temp_dir: Path, grace: float = 2.0) -> list[int]:
    """Stop every process whose command line names TEMP_DIR (gcs, raylets, agents, monitors) and their
    descendants (the workers): SIGTERM, then SIGKILL after GRACE seconds. Returns the pids."""
    import psutil

    marker = f"{temp_dir}/"  # every Ray process of the nodes has a path under it in its arguments
    procs: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in arg for arg in (p.info["cmdline"] or [])):
                procs[p.pid] = p
                for child in p.children(recursive=True):
                    procs[child.pid] = child
        except psutil.Error:
            continue
    procs.pop(os.getpid(), None)
    for p in procs.values():
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return sorted(procs)


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray head advertising no CPU (it runs the driver and the anchor store) and two worker nodes
    with one CPU each, on 127.0.0.2 and 127.0.0.3, all in a private temp dir."""
    for ip in WORKER_IPS:
        if not _loopback_alias_works(ip):
            pytest.skip(f"cannot bind {ip}: the worker nodes need loopback aliases (Linux has them)")
    # short: Ray's unix sockets live under it (108-byte limit)
    temp_dir = Path(tempfile.mkdtemp(prefix="dpdmd-rt-", dir="/tmp"))
    env = base_env()
    port = free_port()
    cluster = LocalCluster(address=f"127.0.0.1:{port}", temp_dir=temp_dir, env=env)
    common = ["--temp-dir", str(temp_dir), "--object-store-memory", str(100 * 1024 * 1024),
              "--disable-usage-stats"]
    try:
        _ray_start("--head", f"--port={port}", "--num-cpus=0", "--num-gpus=0", "--include-dashboard=false",
                   f"--dashboard-port={free_port()}",
                   f"--dashboard-agent-listen-port={free_port()}", *common, env=env)
        for ip in WORKER_IPS:
            _ray_start(f"--address={cluster.address}", f"--node-ip-address={ip}", "--num-cpus=1", "--num-gpus=0",
                       f"--dashboard-agent-listen-port={free_port()}", *common, env=env)
        deadline = time.time() + 60
        while True:
            nodes = cluster.python("""
                print(json.dumps([{"node_id": n["NodeID"], "ip": n["NodeManagerAddress"],
                                   "head": "node:__internal_head__" in n["Resources"],
                                   "cpus": n["Resources"].get("CPU", 0)} for n in ray.nodes() if n["Alive"]]))
            """)
            if len(nodes) == 3 or time.time() > deadline:
                break
            time.sleep(1)
        assert len(nodes) == 3, nodes
        cluster.nodes = nodes
        yield cluster
    finally:
        stop_processes_under(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


# --- a local S3 server ----------------------------------------------------------------------------

@dataclass
class LocalS3:
    endpoint: str
    bucket: str
    env: dict[str, str]
    client: object  # a boto3 S3 client on the server
    server: object = None  # moto's ThreadedMotoServer (a test may stop it: storage lost)

    def keys(self, prefix: str = "") -> list[str]:
        out, token = [], None
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
            page = self.client.list_objects_v2(**kwargs)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 on 127.0.0.1 with one bucket. The returned env points boto3, pyarrow's
    S3FileSystem (hence Ray's storage and the anchor spill) at it through AWS_ENDPOINT_URL, and
    gives the searches' local Ray instances a private temp dir (RAY_TMPDIR, TMPDIR): a bare
    ``ray.init()`` would otherwise join the last cluster someone ``ray start``-ed on this machine
    (/tmp/ray/ray_current_cluster), and its session files stay out of /tmp/ray."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    temp_dir = Path(tempfile.mkdtemp(prefix="dpdmd-s3-", dir="/tmp"))  # short: Ray's sockets live under it
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        aws = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}
        env = base_env(**aws, RAY_TMPDIR=str(temp_dir), TMPDIR=str(temp_dir),
                       AWS_CONFIG_FILE=str(temp_dir / "no-aws-config"),
                       AWS_SHARED_CREDENTIALS_FILE=str(temp_dir / "no-aws-credentials"))
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            env.pop(var, None)
        client = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket="dpdmd-test")
        yield LocalS3(endpoint=aws["AWS_ENDPOINT_URL"], bucket="dpdmd-test", env=env, client=client, server=server)
    finally:
        with contextlib.suppress(Exception):  # stopped already by a test of a lost storage
            server.stop()
        stop_processes_under(temp_dir)  # a search that timed out leaves its local Ray behind
        shutil.rmtree(temp_dir, ignore_errors=True)
