"""The model card of an exported student: ``README.md`` beside its weights.

What a user who finds the folder needs: what it is (a 4-step DP-DMD student of which teacher,
with which knobs), how good it is (its scores and the teacher's, in raw and teacher-normalised
units, and where it sat on the search's front), where it came from (the search, the trial, the
report, the storage), the paper, and a snippet that samples it, run as written from inside the
folder (tests/tune/test_export.py runs it). The YAML header is the Hugging Face Hub's model-card
metadata (library, base model, tags), so the folder can be pushed to the Hub as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

PAPER = ("Tianhe Wu, Ruibin Li, Lei Zhang, Kede Ma. *Diversity-Preserved Distribution Matching Distillation "
         "for Fast Visual Synthesis.* [arXiv:2602.03139](https://arxiv.org/abs/2602.03139), 2026.")
KNOBS = ("anchor_k", "lambda_div", "stop_grad", "cfg_scale", "lr", "lr_fake", "fake_updates", "batch_size",
         "iterations", "teacher_steps", "student_steps", "seed", "mixed_precision")
SCORES = ("diversity", "quality", "diversity_score", "quality_score", "objective")


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def usage_snippet(manifest: Mapping, *, prompt: str) -> str:
    """Python that samples the student in this folder (run from inside it), as its backbone's
    users load it: diffusers' own pipeline for SD3 / SD3.5 / SDXL, `dpdmd.load_student` for the
    built-in digits backbones."""
    config = manifest["config"]
    options = config.get("backbone_options", {})
    backbone = manifest["backbone"]
    if backbone.startswith("digits"):
        return "\n".join([
            "from dpdmd import load_student",
            "from dpdmd.evaluation import save_grid",
            "",
            'student = load_student(".")  # this folder',
            f"images = student.sample([{prompt!r}], seeds=8)  # (prompts, seeds, 1, 32, 32) in [0, 1]",
            'save_grid(images, "sample.png")',
        ])
    sd3 = manifest["network_folder"] == "transformer"
    pipeline = "StableDiffusion3Pipeline" if sd3 else "StableDiffusionXLPipeline"
    network = "SD3Transformer2DModel" if sd3 else "UNet2DConditionModel"
    scheduler = "FlowMatchEulerDiscreteScheduler" if sd3 else "DDIMScheduler"
    dtype = {"bfloat16": "torch.bfloat16", "float16": "torch.float16"}.get(str(options.get("weights_dtype", "bf16"))
                                                                           .replace("bf16", "bfloat16")
                                                                           .replace("fp16", "float16"), "torch.float32")
    resolution = int(options.get("resolution", 1024))
    base = options.get("path") or manifest.get("hub_id") or "stabilityai/stable-diffusion-3.5-medium"
    lines = ["import torch",
             f"from diffusers import {scheduler}, {pipeline}" + ("" if manifest["format"] == "diffusers-lora"
                                                                 else f", {network}"),
             "",
             f"base = {str(base)!r}  # the teacher's pipeline folder (or its hub id: {manifest.get('hub_id', '')})",
             'student = "."  # this folder',
             'device = "cuda" if torch.cuda.is_available() else "cpu"',
             f'scheduler = {scheduler}.from_pretrained(student, subfolder="scheduler")  # the grid it was trained on']
    if manifest["format"] == "diffusers-lora":
        lines += [f"pipe = {pipeline}.from_pretrained(base, scheduler=scheduler, torch_dtype={dtype})",
                  "pipe.load_lora_weights(student)  # the adapter: pytorch_lora_weights.safetensors"]
    else:
        folder = manifest["network_folder"]
        lines += [f'{folder} = {network}.from_pretrained(student, subfolder="{folder}", torch_dtype={dtype})',
                  f"pipe = {pipeline}.from_pretrained(base, {folder}={folder}, scheduler=scheduler, torch_dtype={dtype})"]
    extra = f", max_sequence_length={int(options['max_sequence_length'])}" if sd3 and "max_sequence_length" in options else ""
    lines += ["pipe = pipe.to(device)",
              "# 4 steps, no classifier-free guidance (guidance_scale 1): the student was distilled from the guided teacher;",
              "# seed n gives the image of column n of samples.png (the same initial noise as the search's evaluation)",
              f"image = pipe({prompt!r}, num_inference_steps={int(config.get('student_steps', 4))}, guidance_scale=1.0, "
              f"height={resolution}, width={resolution}{extra},",
              "             generator=torch.Generator().manual_seed(0)).images[0]",
              'image.save("sample.png")']
    return "\n".join(lines)


def model_card(manifest: Mapping, *, origin: Mapping, teacher: Mapping | None, prompt: str,
               has_samples: bool) -> str:
    """README.md of an exported student. ``manifest``: its `dpdmd.student` manifest (with the
    report's scores); ``origin``: where it came from (search, trial, report, checkpoint, command,
    and its place on the front); ``teacher``: the teacher's raw scores on the same evaluation."""
    config = manifest["config"]
    backbone = manifest["backbone"]
    hub_id = manifest.get("hub_id")
    knobs = {k: config.get(k) for k in KNOBS if k in config}
    label = f"K={knobs.get('anchor_k')}, lambda_div={_number(knobs.get('lambda_div'))}"
    front_matter = ["---", "library_name: " + ("dpdmd" if backbone.startswith("digits") else "diffusers"),
                    "tags: [dp-dmd, distillation, few-step, text-to-image]"]
    if hub_id:
        front_matter += [f"base_model: {hub_id}", "pipeline_tag: text-to-image"]
    front_matter.append("---")
    out = front_matter + [
        "",
        f"# A 4-step DP-DMD student of `{backbone}` ({label})",
        "",
        f"A {config.get('student_steps', 4)}-step student distilled from the `{backbone}` teacher"
        + (f" (`{hub_id}`)" if hub_id else "") + " with DP-DMD: its first step regresses to the teacher's anchor after "
        f"K = {knobs.get('anchor_k')} guided teacher steps (weight lambda_div = {_number(knobs.get('lambda_div'))}), "
        "the later steps are trained by distribution matching (DMD). "
        f"Stored as `{manifest['format']}` in `{manifest['dtype']}`"
        + (f" (LoRA rank {manifest['lora']['r']}, alpha {_number(manifest['lora']['lora_alpha'])}, on "
           f"{', '.join(manifest['lora']['target_modules'])})" if manifest.get("lora") else "") + ".",
        "",
        "## How to sample it",
        "",
        "```python",
        usage_snippet(manifest, prompt=prompt),
        "```",
        "",
    ]
    if has_samples:
        out += ["| this student (evaluation prompts x seeds) | its teacher, same prompts and seeds |", "|---|---|",
                "| ![student](samples.png) | ![teacher](teacher.png) |", ""]
    out += ["## Scores", "",
            "Raw scores on the search's evaluation set, and teacher-normalised (the teacher scores 1; "
            "`diversity_score` is two-sided, `objective` J = w diversity_score + (1 - w) min(quality_score, 1)):", "",
            "| | " + " | ".join(SCORES) + " |", "|---|" + "---|" * len(SCORES),
            "| this student | " + " | ".join(_number(manifest.get("scores", {}).get(k)) for k in SCORES) + " |"]
    if teacher:
        out.append(f"| teacher | {_number(teacher.get('diversity'))} | {_number(teacher.get('quality'))} | 1 | 1 | 1 |")
    evaluation = config.get("eval", {})
    out += ["", f"Evaluator `{evaluation.get('evaluator', 'auto')}`, quality metric "
                f"`{evaluation.get('quality_metric', 'auto')}`, {evaluation.get('seeds_per_prompt')} seeds per prompt; "
                "the protocol: the project's docs/evaluation.md.", "",
            "## Where it comes from", "",
            "| | |", "|---|---|"]
    out += [f"| {key} | {_number(value) if not isinstance(value, (list, dict)) else json.dumps(value)} |"
            for key, value in origin.items() if value is not None]
    out += ["", "## Training configuration", "", "| key | value |", "|---|---|"]
    # null: the setting's default where it is resolved (the backbone's guidance scale, lr for lr_fake)
    out += [f"| {k} | {'null (default)' if v is None else _number(v)} |" for k, v in knobs.items()]
    out += [f"| backbone_options | `{json.dumps(config.get('backbone_options', {}))}` |",
            "", "The whole configuration is `config` in `dpdmd_student.json`.", "",
            "## Paper", "", PAPER, ""]
    return "\n".join(out)
