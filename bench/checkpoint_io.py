"""Checkpoint I/O at real scale: seconds and bytes per save and load, and their share of a trial (issue 25).

On an SD3.5-Medium-shaped `SD3Transformer2DModel` (2.24 B parameters, built from its config with
random weights on the GPU, as ``bench/gpu_step.py`` does), written to the machine's LOCAL disk:

- ``student_bf16``: the student alone in its serving dtype (bf16), ``safetensors.torch.save_file`` of
  the state dict: what a report writes when the student is a new best (full fine-tuning);
- ``lora_adapter``: the LoRA r64 adapter alone (peft's ``get_peft_model_state_dict``; bf16, the
  serving dtype) + safetensors: the same for LoRA;
- ``state_dcp`` / ``state_torch_save``: the resumable training state of one network (fp32 weights +
  AdamW's two fp32 moments and step) through ``torch.distributed.checkpoint.save`` (one process, no
  process group) and through ``torch.save``; a DP-DMD trial holds two such networks (student and
  fake score), so the trial's state is twice this (``--networks 2`` writes both where the disk has
  room; by default one is written and the total is extrapolated x2, which the output says);
- ``lora_state_dcp`` / ``lora_state_torch_save``: the same for LoRA (fp32 adapters + moments, both
  networks: small).

Each save is timed to the end of ``fsync`` (the bytes are on the disk, not only in the page cache);
each load after dropping the file's pages from the page cache (``posix_fadvise(DONTNEED)``), into
the GPU tensors of a network of the same shapes. Share of a trial: a report every ``--report-every``
(50) student updates, each one DP-DMD cycle of ``--cycle-s`` seconds (1 student + 5 fake updates,
the anchor; ``bench/gpu_step.py``), so a report interval is 50 x cycle; the student (or adapter)
save's share is save_s / interval, and the full state's share at a cadence of one every N reports
is save_s / (N x interval): the script prints the smallest N that keeps it under 5%.

    python bench/checkpoint_io.py --out $OUT --dir /tmp/ckio --cycle-s 8.5     # GPU
    python bench/checkpoint_io.py --smoke                                        # CPU, tiny model

Results: ``checkpoint_io.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARE_GOAL = 0.05


def _gpu_step():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_step", Path(__file__).with_name("gpu_step.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def fsync_tree(path: Path) -> None:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def drop_cache(path: Path) -> None:
    """Drop the files' pages from the page cache, so that a load reads the disk."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def build(config: dict, device: torch.device, dtype: torch.dtype):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    with torch.device(device):
        return SD3Transformer2DModel(**config).to(dtype)


def adamw_with_state(params, device) -> torch.optim.AdamW:
    """AdamW over ``params`` with both moments allocated (one step on zero gradients; lr 0)."""
    params = list(params)
    opt = torch.optim.AdamW(params, lr=0.0, **({"fused": True} if device.type == "cuda" else {}))
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    for p in params:
        p.grad = None
    return opt


# --- the formats: save(path) and load(path) --------------------------------------------------------------
def safetensors_io(state_fn, load_into):
    from safetensors.torch import load_file, save_file

    def save(path: Path):
        save_file({k: v.contiguous() for k, v in state_fn().items()}, str(path))

    def load(path: Path):
        load_into(load_file(str(path), device=str(load_into.device)))
    return save, load


def dcp_io(state: dict):
    import torch.distributed.checkpoint as dcp

    def save(path: Path):
        dcp.save(state, checkpoint_id=str(path))

    def load(path: Path):
        dcp.load(state, checkpoint_id=str(path))  # in place, into the same-shaped tensors
    return save, load


def torch_save_io(state: dict, device: torch.device):
    def save(path: Path):
        torch.save(state, path)

    def load(path: Path):
        loaded = torch.load(path, map_location=device, weights_only=True)
        copy_into(state, loaded)
    return save, load


def copy_into(dst, src) -> None:
    """Copy the tensors of ``src`` into those of ``dst`` (same nesting): what a resume does."""
    if isinstance(dst, torch.Tensor):
        dst.copy_(src)
    elif isinstance(dst, dict):
        for k in dst:
            copy_into(dst[k], src[k])
    elif isinstance(dst, (list, tuple)):
        for a, b in zip(dst, src):
            copy_into(a, b)


def measure(name: str, save, load, path: Path, device, rows: list, note: str = "", reps: int = 1) -> dict:
    """Save (to fsync) and load (cold page cache) ``reps`` times; the fastest of each is kept."""
    saves, loads, size = [], [], 0
    for _ in range(reps):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)

        def do_save():
            save(path)
            fsync_tree(path)
        saves.append(timed(do_save, device))
        size = tree_bytes(path)
        drop_cache(path)
        loads.append(timed(lambda: load(path), device))
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    row = {"what": name, "bytes": size, "save_s": min(saves), "load_s": min(loads), "saves_s": saves,
           "loads_s": loads, "save_gb_s": size / min(saves) / 1e9, "load_gb_s": size / min(loads) / 1e9, "note": note}
    rows.append(row)
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny model: checks the script")
    ap.add_argument("--dir", default=None, help="folder on the local disk to write to (default: a temp folder)")
    ap.add_argument("--networks", type=int, default=1, choices=(1, 2),
                    help="networks in the full-state measurement: 1 (the trial's two: x2) or 2 (54 GB at SD3.5-M)")
    ap.add_argument("--lora-rank", type=int, default=64)
    ap.add_argument("--cycle-s", type=float, default=8.5, help="seconds of one DP-DMD cycle (bench/gpu_step.py)")
    ap.add_argument("--lora-cycle-s", type=float, default=None, help="the LoRA cycle (default: --cycle-s)")
    ap.add_argument("--report-every", type=int, default=50, help="student updates between reports")
    ap.add_argument("--reps", type=int, default=1, help="saves and loads of each format (the fastest is kept)")
    ap.add_argument("--skip", default="", help="comma-separated formats to leave out")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    args = ap.parse_args(argv)
    import tempfile

    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    gpu_step = _gpu_step()
    config = gpu_step.sd35m_config(args.smoke)
    root = Path(args.dir or tempfile.mkdtemp(prefix="ckio_"))
    root.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    rows: list[dict] = []
    info = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "dir": str(root), "disk_free_gb_before": shutil.disk_usage(root).free / 1e9, "args": vars(args)}
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nets = args.networks or 1

    def save_doc() -> dict:  # after every measurement: a run cut short keeps what it measured
        info["elapsed_s"] = time.perf_counter() - start
        shares = shares_of_trial(rows, nets, args.cycle_s, args.lora_cycle_s or args.cycle_s, args.report_every)
        doc = dict(info, rows=rows, shares=shares)
        (out / "checkpoint_io.json").write_text(json.dumps(doc, indent=1))
        return doc

    def run(name, save, load, path, note):
        if name not in skip:
            measure(name, save, load, path, device, rows, note, args.reps)
            save_doc()

    # The student, fp32 (full fine-tuning's master weights).
    student = build(config, device, torch.float32)
    n_params = sum(p.numel() for p in student.parameters())
    info["parameters"] = n_params
    info["state_elements"] = sum(v.numel() for v in student.state_dict().values())  # + buffers (pos_embed)
    print(f"# {info['device']}, torch {info['torch']}; {n_params / 1e9:.3f} B parameters; writing to {root} "
          f"({info['disk_free_gb_before']:.0f} GB free)", flush=True)

    def bf16_state():
        return {k: v.to(torch.bfloat16) for k, v in student.state_dict().items()}

    def load_student(sd):
        student.load_state_dict(sd)  # copies (and casts) into the fp32 weights
    load_student.device = device
    run("student_bf16", *safetensors_io(bf16_state, load_student), root / "student.safetensors",
        "the student alone, bf16, safetensors (a new best, full fine-tuning)")

    # LoRA: a bf16 base with fp32 adapters of rank r on the attention projections (as gpu_step).
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    lora_nets = []
    for _ in range(2):
        net = build(config, device, torch.bfloat16).requires_grad_(False)
        inject_adapter_in_model(LoraConfig(r=args.lora_rank, lora_alpha=args.lora_rank,
                                           target_modules=list(gpu_step.LORA_TARGETS["SD3Transformer2DModel"])), net)
        for p in net.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        lora_nets.append(net)
    adapter = lora_nets[0]
    info["lora_trainable"] = sum(p.numel() for p in adapter.parameters() if p.requires_grad)

    def adapter_state():
        return {k: v.to(torch.bfloat16) for k, v in get_peft_model_state_dict(adapter).items()}

    def load_adapter(sd):
        from peft import set_peft_model_state_dict
        set_peft_model_state_dict(adapter, sd)
    load_adapter.device = device
    run("lora_adapter", *safetensors_io(adapter_state, load_adapter), root / "adapter.safetensors",
        f"the LoRA r{args.lora_rank} adapter alone, bf16, safetensors (a new best, LoRA)")
    lora_opts = [adamw_with_state([p for p in net.parameters() if p.requires_grad], device) for net in lora_nets]
    lora_state = {}
    for name, net, opt in zip(("student", "fake"), lora_nets, lora_opts):
        lora_state[name] = get_peft_model_state_dict(net)  # the adapters' own fp32 tensors
        lora_state[f"opt_{name}"] = opt.state_dict()
    lora_note = "2 networks: fp32 adapters + AdamW moments"
    run("lora_state_dcp", *dcp_io(lora_state), root / "lora_state_dcp", lora_note)
    run("lora_state_torch_save", *torch_save_io(lora_state, device), root / "lora_state.pt", lora_note)
    del lora_state, lora_opts, lora_nets, adapter
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # The resumable state: fp32 weights + AdamW moments, of one network (x2 for the trial) or both.
    opt = adamw_with_state(student.parameters(), device)
    state = {"student": student.state_dict(), "opt_student": opt.state_dict()}
    if nets == 2:
        fake = build(config, device, torch.float32)
        state.update(fake=fake.state_dict(), opt_fake=adamw_with_state(fake.parameters(), device).state_dict())
    info["state_networks"] = nets
    note = f"{nets} network(s): fp32 weights + AdamW moments" + ("; the trial's two = x2" if nets == 1 else "")
    run("state_dcp", *dcp_io(state), root / "state_dcp", note)
    run("state_torch_save", *torch_save_io(state, device), root / "state.pt", note)

    doc = save_doc()
    print()
    print(table(rows, doc["shares"]))
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def shares_of_trial(rows: list[dict], nets: int, cycle_s: float, lora_cycle_s: float, report_every: int) -> dict:
    """Each save's share of a trial's time: per report (student / adapter) or at the slowest cadence
    that keeps the full state under 5% (``every_n_reports``), with the trial's state = 2 networks."""
    out = {}
    for r in rows:
        lora = r["what"].startswith("lora")
        interval = report_every * (lora_cycle_s if lora else cycle_s)
        scale = 2 / nets if r["what"].startswith("state") else 1  # the trial's two networks
        save_s, size = r["save_s"] * scale, r["bytes"] * scale
        share = save_s / interval
        entry = {"trial_bytes": size, "trial_save_s": save_s, "report_interval_s": interval,
                 "share_every_report": share, "extrapolated_x2": scale != 1}
        if "state" in r["what"]:
            entry["every_n_reports_for_5pct"] = max(1, math.ceil(save_s / (SHARE_GOAL * interval)))
        out[r["what"]] = entry
    return out


def table(rows: list[dict], shares: dict) -> str:
    lines = ["| what | bytes (GB) | save s (fsync) | load s (cold) | save GB/s | trial: GB | trial: save s | "
             "share if every report | full state every N reports for < 5% |", "|---|" + "---|" * 8]
    for r in rows:
        s = shares[r["what"]]
        lines.append(f"| {r['what']} | {r['bytes'] / 1e9:.3f} | {r['save_s']:.2f} | {r['load_s']:.2f} | "
                     f"{r['save_gb_s']:.2f} | {s['trial_bytes'] / 1e9:.2f}{' (x2)' if s['extrapolated_x2'] else ''} | "
                     f"{s['trial_save_s']:.2f} | {100 * s['share_every_report']:.2f}% | "
                     f"{s.get('every_n_reports_for_5pct', '-')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
