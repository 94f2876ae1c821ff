"""Fault injection on a small CPU search: each fault, what it cost. Prints a table.

    python bench/faults.py            # every fault (about 10 minutes on 2 idle cores)
    python bench/faults.py --only driver_sigkill cache_actor_killed

A lost worker node and a lost S3 storage need the loopback cluster and the S3 server of
tests/cluster: `python -m pytest -m slow -s tests/cluster/test_outages.py` prints their numbers.

Columns: trials lost (a trial of the plan with no final row and not listed as failed), rows
duplicated (the same trial and student update reported twice), results identical (every
finished trial's final diversity and quality equal, bit for bit, to an undisturbed run of the
same space), failures visible (summary.json lists them and the exit status is non-zero; an
interrupted search: its summary.json said "interrupted"), exit (the faulted run's status, then
the resumed run's), traceback (a Python traceback or "Exception ignored" anywhere in the output),
seconds (wall time of the faulted run, resume included; the undisturbed run is the first row).
Input refused before anything starts (a prompt the evaluator cannot score, --storage with an unset
variable or empty, a grid over the 10,000-trial cap) rows: exit 2, "no outputs", and the line they
printed with what they wrote (nothing); grace_beyond_length: exit 0 and its warning.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "name": "faults",
    "method": "grid",
    "seed": 0,
    "max_concurrent": 2,
    "baseline": False,
    "backbones": {"digits-flow": {"resources": {"cpu": 1}}},
    "parameters": {"anchor_k": {"values": [2, 5]}, "lambda_div": {"values": [0.05, 0.5]}},
    "train": {"iterations": 60, "batch_size": 2, "teacher_steps": 10, "fake_updates": 1},
    "eval": {"prompts": ["3", "7"], "seeds_per_prompt": 4, "every": 5},
    "scheduler": {"type": "fifo"},
    "wandb": {"enabled": False},
}
KEY = ["anchor_k", "lambda_div", "lr"]


def _env() -> dict:
    return dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT))


OUTPUTS: list[str] = []  # every output of the fault being run (the traceback column)


def _search(space: Path, storage: Path, *extra: str, timeout: float = 1200) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "tune.search", "--space", str(space), "--storage", str(storage),
                           *extra], capture_output=True, text=True, env=_env(), timeout=timeout, cwd=ROOT)
    OUTPUTS.append(proc.stdout + proc.stderr)
    return proc.returncode, proc.stderr


def _traceback() -> bool:
    return any("Traceback" in out or "Exception ignored" in out for out in OUTPUTS)


def _finals(exp: Path) -> pd.DataFrame:
    trials = pd.read_parquet(exp / "trials.parquet")
    return trials.sort_values("student_updates").groupby("trial_id").tail(1)


def _measure(exp: Path, code: int, seconds: float, reference: pd.DataFrame | None, planned: int) -> dict:
    summary = json.loads((exp / "summary.json").read_text()) if (exp / "summary.json").exists() else {}
    failed = summary.get("failed_trials", [])
    if not (exp / "trials.parquet").exists():
        return {"trials lost": planned, "rows duplicated": 0, "results identical": "no outputs",
                "failures visible": bool(code), "exit": code, "seconds": round(seconds, 1)}
    trials = pd.read_parquet(exp / "trials.parquet")
    finals = _finals(exp)
    done = finals[finals["student_updates"] == finals["student_updates"].max()]
    lost = planned - len(done) - len({f["trial_id"] for f in failed} - set(done["trial_id"]))
    identical = "-"
    if reference is not None:
        keys = [k for k in KEY if k in done and k in reference]
        merged = done.merge(reference, on=keys, suffixes=("", "_ref"))
        identical = bool(len(merged) and (merged["diversity"] == merged["diversity_ref"]).all()
                         and (merged["quality"] == merged["quality_ref"]).all())
    final = code if isinstance(code, int) else int(str(code).split(",")[-1].split()[-1].strip(")")) \
        if "then" in str(code) else int(str(code).split()[0])  # "130, then 0": the resumed run's; "0 (the second: 2)"
    visible = (not failed and final == 0) or (bool(failed) and final != 0)
    if SAID:  # the faulted run said what happened (an interrupted run's summary.json, the refused search's error)
        visible = visible and all(SAID)
    return {"trials lost": lost, "rows duplicated": int(trials.duplicated(["trial_id", "student_updates"]).sum()),
            "results identical": identical, "failures visible": visible,
            "exit": code, "seconds": round(seconds, 1)}


SAID: list[bool] = []  # the faulted run said what happened (an interrupted one: "interrupted" and 128 + signal)


# --- the faults -----------------------------------------------------------------------------------

def undisturbed(work: Path, reference):
    space, storage = _write(work, SPACE), work / "runs"
    started = time.time()
    code, _ = _search(space, storage)
    return storage / "faults", code, time.time() - started


def driver_sigkill(work: Path, reference):
    """SIGKILL of the driver (and its local Ray) once two trials have checkpoints, then --resume."""
    space, storage = _write(work, SPACE), work / "runs"
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "tune.search", "--space", str(space), "--storage", str(storage)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=ROOT,
                            start_new_session=True)
    while proc.poll() is None and len(list(storage.glob("faults/*/checkpoint_*"))) < 2:
        time.sleep(0.5)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    code, _ = _search(space, storage, "--resume")
    return storage / "faults", code, time.time() - started


def cache_actor_killed(work: Path, reference):
    """The anchor store removed with ray.kill (Ray does not restart it) once it holds anchors."""
    import ray

    from tune.cli import search
    from tune.storage.uri import join_uri
    from tune.trial.anchor_store import find_store

    space, storage = _write(work, SPACE), work / "runs"
    spill = join_uri(str(storage.resolve()), "anchor_cache")

    def killer():
        while True:
            try:
                if ray.is_initialized() and ray.get(find_store(spill).stats.remote(), timeout=10).get("spill_writes", 0) >= 3:
                    ray.kill(find_store(spill))
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.2)

    threading.Thread(target=killer, daemon=True).start()
    started = time.time()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    code = search.main(["--space", str(space), "--storage", str(storage)])
    return storage / "faults", code, time.time() - started


def nan_injection(work: Path, reference):
    """One trial with lr 1e30: its weights overflow; it must end as diverged, listed, exit 1."""
    params = dict(SPACE["parameters"], lr={"values": [1.0e30]}, anchor_k={"value": 2}, lambda_div={"value": 0.5})
    space, storage = _write(work, dict(SPACE, parameters=params)), work / "runs"
    started = time.time()
    code, _ = _search(space, storage)
    return storage / "faults", code, time.time() - started


def read_only_storage(work: Path, reference):
    """--storage on a folder nobody may write to: refused before Ray starts (exit 2). As root
    (who may write anywhere) a folder under /proc stands for it."""
    space = _write(work, SPACE)
    locked = Path("/proc/dpdmd-faults") if os.geteuid() == 0 else work / "locked"
    if locked.parent == work:
        locked.mkdir()
        locked.chmod(0o500)
    started = time.time()
    try:
        code, _ = _search(space, locked / "runs")
    finally:
        if locked.parent == work:
            locked.chmod(0o700)
    return work / "none" / "faults", code, time.time() - started


def address_unreachable(work: Path, reference):
    """--address of a port where nothing listens: refused within the connect bound (exit 2)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    space = _write(work, SPACE)
    started = time.time()
    code, _ = _search(space, work / "runs", "--address", f"127.0.0.1:{port}")
    return work / "runs" / "faults", code, time.time() - started


def _on_full_tmpfs(work: Path, size_mb: int, script: str, *args, keep: int | None = None, timeout: int) -> dict:
    """Run ``script DISK [ARGS] SNAPSHOTS [KEEP]`` (a tests/faults/ program that fills the disk, then
    frees it and resumes) in a user namespace with WORK/disk a ``size_mb`` MiB tmpfs; its result.json."""
    disk, snapshots = work / "disk", work / "snapshots"
    disk.mkdir()
    snapshots.mkdir()
    argv = " ".join(str(a) for a in (disk, *args, snapshots, *(() if keep is None else (keep,))))
    command = f"mount -t tmpfs -o size={size_mb}m tmpfs {disk} && exec {sys.executable} {script} {argv}"
    subprocess.run(["unshare", "-Urm", "sh", "-c", command], cwd=ROOT, env=_env(), timeout=timeout, check=True,
                   capture_output=True)
    return json.loads((snapshots / "result.json").read_text())


def disk_full(work: Path, reference):
    """The storage is a 256 MiB tmpfs (a private mount namespace: ``unshare -Urm``) filled up once a
    trial has a checkpoint there; the search must end with exit 1 saying why; then the space is
    freed and ``--resume`` finishes it (tests/faults/full_disk_search.py), putting back the last
    whole copy of Ray's experiment state the full disk cut short (tune/storage/state_backup.py). Seconds:
    both runs."""
    space, snapshots = _write(work, SPACE), work / "snapshots"
    started = time.time()
    result = _on_full_tmpfs(work, 256, "tests/faults/full_disk_search.py", space, timeout=3000)
    print(f"disk_full: the full-disk run exited {result['failed']['code']} after {result['failed']['seconds']} s "
          f"(filled: {result['filled']}); the resumed run exited {result['resumed']['code']}", flush=True)
    for line in result["resumed"]["said"]:  # the resume's own warnings: what it restored
        print(f"disk_full, resumed: {line}", flush=True)
    said = " ".join(result["failed"]["said"])
    SAID.append(bool(result["filled"]) and result["failed"]["code"] == 1 and "its disk is full" in said)
    code = f"{result['failed']['code']}, then {result['resumed']['code']}"  # the full-disk run's, the resume's
    return snapshots / "resumed" / "faults", code, time.time() - started


def _refused(work: Path, space: dict, *flags: str) -> tuple[Path, int, float]:
    """A search refused before anything starts: exit 2, its first problem printed, nothing written."""
    started = time.time()
    code, err = _search(_write(work, space), work / "runs", *flags)
    said = next((line.strip() for line in err.splitlines()[1:] if line.startswith("  ")), err.strip()[-200:])
    print(f"  said: {said}; written: {sorted(p.name for p in work.iterdir() if p.name != 'space.yaml') or 'nothing'}",
          flush=True)
    return work / "runs" / "faults", code, time.time() - started


def unscorable_prompt(work: Path, reference):
    """eval.prompts ["3", ""]: the digits evaluator cannot score "" (issue 24): exit 2 before Ray."""
    return _refused(work, dict(SPACE, eval={**SPACE["eval"], "prompts": ["3", ""]}))


def train_unscorable_prompt(work: Path, reference):
    """``dpdmd.train --eval-prompts zero ""``: exit 2 naming the flag, --out not written (it held
    config.json, then a traceback)."""
    started = time.time()
    out = work / "out"
    proc = subprocess.run([sys.executable, "-m", "dpdmd.train", "--eval-prompts", "zero", "", "--device", "cpu",
                           "--out", str(out)], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)
    said = next((line for line in proc.stderr.splitlines() if line.startswith("error:")), proc.stderr[-200:])
    print(f"  said: {said}; --out written: {out.exists()}", flush=True)
    return work / "none" / "faults", proc.returncode, time.time() - started


def storage_unset_variable(work: Path, reference):
    """--storage 'runs/${DPDMD_FAULTS_UNSET}/y' (issue 24): refused naming the variable, no folder made."""
    env = os.environ.pop("DPDMD_FAULTS_UNSET", None)
    try:
        return _refused(work, SPACE, "--storage", str(work / "runs" / "${DPDMD_FAULTS_UNSET}" / "y"))
    finally:
        if env is not None:
            os.environ["DPDMD_FAULTS_UNSET"] = env


def storage_empty(work: Path, reference):
    """--storage "" (issue 24): refused, not the current folder."""
    return _refused(work, SPACE, "--storage", "")


def oversized_grid(work: Path, reference):
    """A million grid points (issue 24): refused by the one cap (10,000 trials) before any plan, in the dry run."""
    values = [round(0.001 * i, 3) for i in range(1, 1001)]
    return _refused(work, dict(SPACE, parameters={"lambda_div": {"values": values}, "lr": {"values": values}}),
                    "--dry-run")


def grace_beyond_length(work: Path, reference):
    """scheduler.grace_period above the trials' length (issue 24): a warning in the dry run, exit 0."""
    space = dict(SPACE, scheduler={"type": "asha", "grace_period": 1000})
    started = time.time()
    code, err = _search(_write(work, space), work / "runs", "--dry-run")
    print(f"  said: {next((line for line in err.splitlines() if line.startswith('warning:')), 'no warning')}", flush=True)
    return work / "runs" / "faults", code, time.time() - started


def _interrupt(work: Path, sig: int, *, times: int = 1, group: bool = True):
    """Signal the search ``times`` once two trials have checkpoints (to its process group, as a
    terminal's Ctrl+C, or to the driver alone, as ``timeout`` or Kubernetes), then --resume."""
    space, storage = _write(work, SPACE), work / "runs"
    started = time.time()
    log = work / "interrupted.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tune.search", "--space", str(space), "--storage",
                                 str(storage)], stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT,
                                start_new_session=True)
        while proc.poll() is None and len(list(storage.glob("faults/*/checkpoint_*"))) < 2:
            time.sleep(0.5)
        for _ in range(times):
            if proc.poll() is None:
                os.killpg(proc.pid, sig) if group else os.kill(proc.pid, sig)
                time.sleep(1.0)
        proc.wait(timeout=600)
    OUTPUTS.append(log.read_text())
    summary = storage / "faults" / "summary.json"
    said = summary.exists() and json.loads(summary.read_text()).get("interrupted") == signal.Signals(sig).name
    SAID.append(bool(said and proc.returncode == 128 + sig))
    code, _ = _search(space, storage, "--resume")
    print(f"{signal.Signals(sig).name} x{times}: the interrupted run exited {proc.returncode}, its summary said "
          f"interrupted: {said}; the resumed run exited {code}", flush=True)
    return storage / "faults", f"{proc.returncode}, then {code}", time.time() - started


def sigint(work: Path, reference):
    """Ctrl+C once (SIGINT to the process group) once two trials have checkpoints, then --resume."""
    return _interrupt(work, signal.SIGINT)


def sigint_twice(work: Path, reference):
    """Ctrl+C twice, a second apart: still the graceful stop, then --resume."""
    return _interrupt(work, signal.SIGINT, times=2)


def sigterm(work: Path, reference):
    """SIGTERM to the driver alone (``timeout``, Kubernetes), then --resume. Before: Ray's handler
    aborted with exit 134, and a resume once duplicated a report."""
    return _interrupt(work, signal.SIGTERM, group=False)


def same_name_twice(work: Path, reference):
    """The same search started twice at once: the second is refused before it starts (exit 2,
    naming the first), the first finishes alone."""
    space, storage = _write(work, SPACE), work / "runs"
    started = time.time()
    first = subprocess.Popen([sys.executable, "-m", "tune.search", "--space", str(space), "--storage", str(storage)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=ROOT)
    while first.poll() is None and not (storage / "faults" / "dpdmd_space.json").exists():
        time.sleep(0.2)
    second, said = _search(space, storage)
    out, _ = first.communicate(timeout=1200)
    SAID.append(second == 2 and f"is in use by another search (pid {first.pid}" in said)
    OUTPUTS.append(out)
    print(f"same_name_twice: the second search exited {second} ({said.strip().splitlines()[-1][:160] if said else ''}); "
          f"the first exited {first.returncode}", flush=True)
    return storage / "faults", f"{first.returncode} (the second: {second})", time.time() - started


def disk_full_checkpoint(work: Path, reference):
    """``dpdmd.train`` on a 64 MiB tmpfs filled after its 2nd checkpoint but for 6 MiB: room for the
    samples and a row, not for the 14 MB checkpoint (torch's own errors, no errno); then the space
    is freed and ``--resume`` finishes it (tests/faults/full_disk_run.py). Its own row: a training
    run, not a search."""
    snapshots = work / "snapshots"
    started = time.time()
    result = _on_full_tmpfs(work, 64, "tests/faults/full_disk_run.py", keep=6 << 20, timeout=1800)
    (failed_code, failed_err), (resumed_code, resumed_err) = result["failed"], result["resumed"]
    OUTPUTS.extend([failed_err, resumed_err])
    said = [line for line in failed_err.splitlines() if line.startswith("error:")]
    print(f"disk_full_checkpoint: {said[0] if said else failed_err[-300:]}", flush=True)
    failed, resumed = (pd.read_csv(snapshots / step / "metrics.csv") for step in ("failed", "resumed"))
    columns = ["student_updates", "diversity", "quality"]
    return {"trials lost": "-", "rows duplicated": int(resumed.duplicated("student_updates").sum()),
            "results identical": bool(failed[columns].equals(resumed[columns])),
            "failures visible": failed_code == 1 and bool(said) and "state.pt: No space left on device" in said[0],
            "exit": f"{failed_code}, then {resumed_code}", "seconds": round(time.time() - started, 1)}


FAULTS = {f.__name__: f for f in (undisturbed, driver_sigkill, cache_actor_killed, nan_injection,
                                     read_only_storage, address_unreachable, disk_full, same_name_twice, sigint,
                                     sigint_twice, sigterm, disk_full_checkpoint, unscorable_prompt,
                                     train_unscorable_prompt, storage_unset_variable, storage_empty, oversized_grid,
                                     grace_beyond_length)}
PLANNED = {"nan_injection": 1, "read_only_storage": 0, "address_unreachable": 0, "unscorable_prompt": 0,
           "train_unscorable_prompt": 0, "storage_unset_variable": 0, "storage_empty": 0, "oversized_grid": 0,
           "grace_beyond_length": 0}


def _write(work: Path, space: dict) -> Path:
    path = work / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(FAULTS), help="run only these faults")
    args = parser.parse_args(argv)
    names = ["undisturbed", *[n for n in (args.only or FAULTS) if n != "undisturbed"]]
    rows, reference = [], None
    root = Path(tempfile.mkdtemp(prefix="dpdmd-faults-"))
    try:
        for name in names:
            work = root / name
            work.mkdir()
            OUTPUTS.clear()
            SAID.clear()
            measured = FAULTS[name](work, reference)
            if isinstance(measured, dict):  # a fault of its own kind (a training run): measured there
                row = {"fault": name, **measured, "traceback": _traceback()}
                rows.append(row)
                print(row, flush=True)
                continue
            exp, code, seconds = measured
            planned = PLANNED.get(name, 4)
            compare = None if name == "nan_injection" else reference  # a different space
            row = {"fault": name, **_measure(exp, code, seconds, compare, planned), "traceback": _traceback()}
            if name == "undisturbed":
                reference = _finals(exp)
            rows.append(row)
            print(row, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    columns = list(dict.fromkeys(c for row in rows for c in row))
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "-")) for c in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
