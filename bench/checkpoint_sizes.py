"""Bytes a search writes per report and per trial, before and after issue 22's checkpoints.

    python bench/checkpoint_sizes.py                    # both tables (markdown), a minute on a CPU
    python bench/checkpoint_sizes.py --write-counts     # also bench/results/parameter_counts.json

BEFORE: every report wrote the whole resumable state (`dpdmd.training.checkpoints.save_checkpoint`: the fp32
trainable weights of student and fake score and both AdamW moments; LoRA: the adapters). AFTER: a
report writes the student in its serving dtype only when it is the trial's new best
(`dpdmd.student.save_student`), and the state only at the space's cadence
(``checkpoint.state_every_minutes``, 30 by default). `dpdmd.training.checkpoint_bytes` holds the arithmetic.

1. **Real backbones, from parameter counts**: SD3.5-M, SD3.5-L and SDXL (their configs in
   ``bench/network_configs.json``), built on the meta device, full and LoRA rank 64 on the
   backbones' default targets. The reference trial is ``search_spaces/anchor.yaml``'s: 500 student
   updates evaluated every 50 (10 reports); its length, and so how many states the cadence
   writes, from the measured cycle times (``bench/results/cycle_times.json``).
2. **Measured**: the files `save_checkpoint` and `save_student` actually write for the built-in
   digits backbones and the tiny SD3 / SDXL pipelines (tests/dpdmd/tiny_pipelines.py), full and
   LoRA, after one fake-score and one student update (so AdamW's moments exist), against the
   arithmetic.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpdmd.training.checkpoint_bytes import count_parameters, state_bytes, student_bytes  # noqa: E402
from tune.run.estimate import state_saves  # noqa: E402

COUNTS = ROOT / "bench" / "results" / "parameter_counts.json"
CYCLES = ROOT / "bench" / "results" / "cycle_times.json"
NETWORKS = ROOT / "bench" / "network_configs.json"
LORA_RANK = 64


def gb(n: float) -> str:
    """Decimal units, 3 significant digits."""
    from tune.run.estimate import human_bytes

    return human_bytes(n)


def real_counts() -> dict:
    """``{backbone: {"params", "lora", "lora_rank", "class", "source"}}`` from the meta builds."""
    from dpdmd.backbones.sd3 import SD3_LORA_TARGETS
    from dpdmd.backbones.sdxl import UNET_LORA_TARGETS

    targets = {"SD3Transformer2DModel": SD3_LORA_TARGETS, "UNet2DConditionModel": UNET_LORA_TARGETS}
    out = {}
    for name, spec in json.loads(NETWORKS.read_text())["networks"].items():
        counts = count_parameters(spec["class"], spec["config"], lora_rank=LORA_RANK, lora_targets=targets[spec["class"]])
        out[name] = {**counts, "lora_rank": LORA_RANK, "lora_targets": list(targets[spec["class"]]),
                     "class": spec["class"], "source": spec["source"]}
    return out


def fastest_cycle(backbone: str, train_mode: str) -> dict | None:
    rows = [m for m in json.loads(CYCLES.read_text())["measurements"]
            if m["backbone"] == backbone and m["train_mode"] == train_mode and m["optimizer"] == "adamw"]
    return min(rows, key=lambda m: m["cycle_s"]) if rows else None


def real_table(counts: dict, *, updates: int, every: int, cadence_min: float) -> str:
    reports = math.ceil(updates / every)
    lines = [f"Reference trial: {updates} student updates evaluated every {every} ({reports} reports), the state at the first report, then every "
             f"{cadence_min:g} min of training; AdamW; full fine-tuning serves bf16, a LoRA adapter float32. AFTER per "
             "trial is an upper bound: every report a new best (a student written at each).", "",
             "| backbone | mode | trained params | student | state | BEFORE per report | BEFORE per trial | held (BEFORE) "
             "| AFTER per report | trial length (measured cycle) | AFTER per trial, at most | held (AFTER) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in counts.items():
        for mode in ("full", "lora"):
            trained = c["params"] if mode == "full" else c["lora"]
            state = state_bytes(trained)
            student = student_bytes(params=c["params"], train_mode=mode, lora=c["lora"], dtype="bfloat16")
            cycle = fastest_cycle(name, mode)
            if cycle is None:
                length, after = "no measurement", (f"{reports} x {gb(student)} + k x {gb(state)}, k = 1 + the "
                                                    f"{cadence_min:g}-minute spans after the first report")
            else:
                minutes = updates * cycle["cycle_s"] / 60
                k = state_saves(reports, minutes, cadence_min)
                length = f"{minutes:.0f} min ({cycle['cycle_s']:g} s, {cycle['machine'].split(' (')[0]}{', compiled' if cycle['compile'] else ''})"
                after = f"{gb(reports * student + k * state)} ({k} states)"
            mode_text = "full" if mode == "full" else f"LoRA r{c['lora_rank']}"
            lines.append(f"| {name} | {mode_text} | {trained / 1e6:,.1f} M | {gb(student)} | {gb(state)} | {gb(state)} | "
                         f"{gb(reports * state)} | {gb(2 * state)} (best + latest) | {gb(student)} at a new best, + "
                         f"{gb(state)} at the cadence | {length} | {after} | {gb(student + state)} |")
    return "\n".join(lines)


# --- measured on the built-in and tiny backbones ------------------------------------------------

def _config(name: str, path: str | None, train_mode: str):
    from dpdmd.config import EvalConfig, TrainConfig

    options = {}
    if path is not None:
        options = {"path": path, "resolution": 32, "train_mode": train_mode, "lora_rank": 4}
        if name != "sdxl":
            options["max_sequence_length"] = 16
    return TrainConfig(backbone=name, backbone_options=options, teacher_steps=6, anchor_k=2, device="cpu",
                       batch_size=2, eval=EvalConfig(prompts=["a cat"] if path else [], seeds_per_prompt=2))


def _one_update_each(method, backbone, config) -> None:
    """One fake-score and one student update, as the trainer's first two iterations."""
    from dpdmd.anchors import LocalAnchors
    from dpdmd.stream import iteration_batch

    prompts = list(config.eval.prompts) or list(backbone.default_prompts)[:2]
    for iteration, update in enumerate(("fake", "student")):
        batch = iteration_batch(seed=0, iteration=iteration, prompts=prompts, batch_size=config.batch_size,
                                latent_shape=backbone.latent_shape, num_dmd_levels=len(backbone.schedule.dmd_levels))
        cond = backbone.encode_prompts(batch.prompts)
        if update == "fake":
            method.fake_update(batch, cond)
        else:
            uncond = backbone.unconditional(len(batch.prompts))
            method.student_update(batch, cond, uncond, LocalAnchors(backbone, method.teacher, config.anchor_k)(batch, cond, uncond))


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


CASES = (("digits-flow", "full"), ("digits-eps", "full"), ("sd35m", "full"), ("sd35m", "lora"), ("sdxl", "full"),
         ("sdxl", "lora"))


def measured_rows(work: Path, cases=CASES) -> list[dict]:
    """The measured row of each (backbone, train mode) of ``cases``; the SD ones on tiny pipelines."""
    import torch

    from dpdmd.student import save_student
    from dpdmd.training.build import build_backbone, build_method
    from dpdmd.training.checkpoints import save_checkpoint
    from tests.dpdmd.tiny_pipelines import make_tiny_sd3, make_tiny_sdxl

    makers = {"sd35m": make_tiny_sd3, "sdxl": make_tiny_sdxl}
    paths = {name: str(makers[name](work / name)) for name in {n for n, _ in cases if n in makers}}
    rows = []
    for name, mode in cases:
        path = paths.get(name)
        torch.manual_seed(0)
        config = _config(name, path, mode)
        backbone = build_backbone(config)
        method = build_method(config, backbone)
        _one_update_each(method, backbone, config)
        out = work / f"{name}-{mode}"
        save_checkpoint(out / "checkpoint", method, config, 2)
        save_student(out / "student", backbone=backbone, network=method.student, config=config)
        trained = sum(p.numel() for p in method.student.parameters() if p.requires_grad)
        params = sum(p.numel() for n, p in method.student.named_parameters() if "lora_" not in n)
        dtype = str(backbone.serving_dtype).removeprefix("torch.")
        rows.append({"backbone": name if path is None else f"{name} (tiny pipeline)", "mode": mode,
                     "params": params, "trained": trained,
                     "state_expected": state_bytes(trained), "state_written": (out / "checkpoint" / "state.pt").stat().st_size,
                     "state_folder": _folder_bytes(out / "checkpoint"),
                     "student_expected": student_bytes(params=params, train_mode=mode, lora=trained, dtype=dtype),
                     "student_written": _folder_bytes(out / "student"), "dtype": dtype if mode == "full" else "float32"})
    return rows


def measured_table(rows: list[dict]) -> str:
    lines = ["| backbone | mode | params | trained | state.pt: arithmetic | state.pt written | checkpoint folder "
             "| student: arithmetic | student folder written |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['mode']} | {r['params']:,} | {r['trained']:,} | {r['state_expected']:,} B "
                     f"| {r['state_written']:,} B | {r['state_folder']:,} B | {r['student_expected']:,} B ({r['dtype']}) "
                     f"| {r['student_written']:,} B |")
    return "\n".join(lines)


def provenance() -> dict:
    import diffusers
    import peft
    import torch

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"command": "python bench/checkpoint_sizes.py --write-counts", "date": datetime.date.today().isoformat(),
            "commit": commit or None, "torch": torch.__version__, "diffusers": diffusers.__version__, "peft": peft.__version__}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-counts", action="store_true", help=f"write {COUNTS.relative_to(ROOT)}")
    parser.add_argument("--updates", type=int, default=500, help="student updates of the reference trial")
    parser.add_argument("--every", type=int, default=50, help="evaluations (reports) every this many updates")
    parser.add_argument("--cadence-minutes", type=float, default=30.0, help="state_every_minutes (0: every report)")
    parser.add_argument("--no-measure", action="store_true", help="skip the measured table (no builds)")
    args = parser.parse_args(argv)
    counts = real_counts()
    if args.write_counts:
        COUNTS.write_text(json.dumps({"about": "Parameters of the real backbones' trained networks and of their LoRA "
                                               f"adapters (rank {LORA_RANK}, the backbones' default targets), counted on "
                                               "the meta device from bench/network_configs.json by bench/checkpoint_sizes.py.",
                                      **provenance(), "counts": counts}, indent=1) + "\n")
        print(f"wrote {COUNTS.relative_to(ROOT)}")
    print("## From the parameter counts\n")
    print(real_table(counts, updates=args.updates, every=args.every, cadence_min=args.cadence_minutes))
    if not args.no_measure:
        with tempfile.TemporaryDirectory() as work:
            print("\n## Measured: the files written\n")
            print(measured_table(measured_rows(Path(work))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
