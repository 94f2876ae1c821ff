"""A saved student (`dpdmd.student`) loads the way its backbone's users load it and samples what
the trainer's own sampler samples: diffusers' own pipelines (StableDiffusion3Pipeline,
StableDiffusionXLPipeline) with the exported network or LoRA adapter, 4 steps, no CFG, give the
images `Student.sample` gives for the same prompt and seed, on the tiny pipelines; the built-in
digits students reload in their own format."""

from __future__ import annotations

import json

import pytest
import torch

from dpdmd.config import EvalConfig, TrainConfig
from dpdmd.evaluation import generate
from dpdmd.data.prompt_cache import PromptEmbeddingCache
from dpdmd.student import MANIFEST, find_student, load_student, read_manifest, save_student
from dpdmd.training.build import build_backbone, build_method

from .tiny_pipelines import make_tiny_sd3, make_tiny_sdxl

PROMPT = "a cat"
SEEDS = 2


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {"sd35m": str(make_tiny_sd3(root / "sd3")), "sdxl": str(make_tiny_sdxl(root / "sdxl"))}


def config_for(name: str, dirs=None, **options) -> TrainConfig:
    backbone_options = {}
    if dirs is not None:
        backbone_options = {"path": dirs[name], "resolution": 32, "weights_dtype": "fp32", "lora_rank": 4,
                            "lora_alpha": 8.0, **options}
        if name != "sdxl":
            backbone_options["max_sequence_length"] = 16
    return TrainConfig(backbone=name, backbone_options=backbone_options, teacher_steps=6, anchor_k=2, device="cpu",
                       eval=EvalConfig(prompts=[PROMPT] if dirs else [], seeds_per_prompt=SEEDS))


def trained_student(config: TrainConfig):
    """A backbone and a DPDMD whose student differs from the teacher (a random nudge of every
    trainable weight: the export must carry the trained weights, not the teacher's)."""
    backbone = build_backbone(config)
    torch.manual_seed(0)
    method = build_method(config, backbone)
    with torch.no_grad():
        for p in method.student.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn_like(p))
    return backbone, method


def trainer_images(backbone, method, prompts, seeds):
    """What the trainer's evaluation samples: `DPDMD.sample` through `generate`."""
    return generate(backbone, method.sample, prompts, seeds, PromptEmbeddingCache(backbone))


@pytest.mark.parametrize("name", ["digits-flow", "digits-eps"])
def test_digits_student_reloads_in_its_own_format(tmp_path, name):
    config = config_for(name)
    backbone, method = trained_student(config)
    folder = save_student(tmp_path / "student", backbone=backbone, network=method.student, config=config,
                          student_updates=7)
    manifest = read_manifest(folder)
    assert manifest["backbone"] == name and manifest["format"] == "diffusers-model"
    assert manifest["student_updates"] == 7 and manifest["config"] == config.to_dict()
    assert (folder / backbone.network_folder / "diffusion_pytorch_model.safetensors").is_file()
    student = load_student(tmp_path)  # the folder holding student/ is found too
    prompts = ["seven", "three"]
    assert torch.allclose(student.sample(prompts, SEEDS), trainer_images(backbone, method, prompts, SEEDS), atol=1e-5)
    loads = []
    load_teacher = student.backbone.load_teacher
    student.backbone.load_teacher = lambda: loads.append(1) or load_teacher()
    teacher = student.teacher_sample(prompts, SEEDS)
    assert teacher.shape == (2, SEEDS, 1, 32, 32) and not torch.equal(teacher, student.sample(prompts, SEEDS))
    # the teacher is loaded once and kept: the final protocol samples it once per chunk of prompts
    assert torch.allclose(student.teacher_sample(prompts[:1], SEEDS), teacher[:1], atol=1e-5) and len(loads) == 1
    assert student.teacher is student.teacher and not student.teacher.training
    student.drop_teacher()
    assert torch.allclose(student.teacher_sample(prompts, SEEDS), teacher, atol=1e-5) and len(loads) == 2


def pipeline_images(name, dirs, folder, mode):
    """Diffusers' own pipeline with the saved student, as the model card tells users to load it."""
    import diffusers

    if name == "sd35m":
        pipeline_class, network_class, extra = diffusers.StableDiffusion3Pipeline, diffusers.SD3Transformer2DModel, \
            {"max_sequence_length": 16}
    else:
        pipeline_class, network_class, extra = diffusers.StableDiffusionXLPipeline, diffusers.UNet2DConditionModel, {}
    manifest = json.loads((folder / MANIFEST).read_text())
    sub = manifest["network_folder"]
    parts = {} if mode == "lora" else {sub: network_class.from_pretrained(folder / sub)}
    scheduler = getattr(diffusers, json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["_class_name"])
    parts["scheduler"] = scheduler.from_pretrained(folder / "scheduler")
    pipe = pipeline_class.from_pretrained(dirs[name], **parts)
    if mode == "lora":
        pipe.load_lora_weights(folder)
    pipe.set_progress_bar_config(disable=True)
    images = [pipe(PROMPT, height=32, width=32, num_inference_steps=4, guidance_scale=1.0, output_type="pt",
                   generator=torch.Generator().manual_seed(seed), **extra).images[0] for seed in range(SEEDS)]
    return torch.stack(images)


@pytest.mark.parametrize("mode", ["full", "lora"])
@pytest.mark.parametrize("name", ["sd35m", "sdxl"])
def test_exported_student_samples_the_same_in_the_diffusers_pipeline(dirs, tmp_path, name, mode):
    config = config_for(name, dirs, train_mode=mode)
    backbone, method = trained_student(config)
    folder = save_student(tmp_path / "export", backbone=backbone, network=method.student, config=config)
    if mode == "lora":  # the adapter alone, in the format the pipeline's load_lora_weights reads
        assert (folder / "pytorch_lora_weights.safetensors").is_file()
        assert not (folder / backbone.network_folder).exists()
        assert read_manifest(folder)["lora"] == {"r": 4, "lora_alpha": 8.0,
                                                 "target_modules": list(backbone.lora_target_modules)}
    ours = load_student(folder).sample([PROMPT], SEEDS)[0]
    assert torch.allclose(ours, trainer_images(backbone, method, [PROMPT], SEEDS)[0], atol=1e-5)
    theirs = pipeline_images(name, dirs, folder, mode)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
    teacher = load_student(folder).teacher_sample([PROMPT], SEEDS)[0]  # the student is not the teacher
    assert (teacher - ours).abs().max() > 1e-3


def test_full_student_is_stored_in_the_dtype_it_is_served_in(dirs, tmp_path):
    from safetensors import safe_open

    config = config_for("sd35m", dirs, weights_dtype="bf16")
    backbone, method = trained_student(config)
    assert next(method.student.parameters()).dtype == torch.float32  # fp32 master weights train
    folder = save_student(tmp_path / "s", backbone=backbone, network=method.student, config=config)
    with safe_open(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.bfloat16} and read_manifest(folder)["dtype"] == "bfloat16"


def test_a_folder_without_a_student_says_what_to_give(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        find_student(tmp_path / "missing")
    with pytest.raises(ValueError, match="tune.export"):
        find_student(tmp_path)
    (tmp_path / MANIFEST).write_text("{}")
    with pytest.raises(ValueError, match="not a dpdmd student manifest"):
        read_manifest(tmp_path)


def test_evaluate_scores_a_saved_student_with_its_evaluator_or_another(tmp_path, capsys):
    """``python -m dpdmd.evaluate --student``: a dpdmd.train run's student, scored with the run's
    own evaluation settings, or with an ``eval:`` mapping given on the command line."""
    from dpdmd.cli.evaluate import main
    from dpdmd.training.loop import train

    config = TrainConfig(backbone="digits-flow", iterations=12, batch_size=2, teacher_steps=6, anchor_k=2,
                         device="cpu", eval=EvalConfig(prompts=["3", "7"], seeds_per_prompt=4, every=0))
    train(config, out_dir=tmp_path / "run", progress=False)
    assert main(["--student", str(tmp_path / "run")]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["diversity"] > 0 and scored["quality"] > 0 and "at 2 student updates" in scored["scored"]
    assert scored["diversity_ratio"] == pytest.approx(scored["diversity"] / scored["teacher"]["diversity"], abs=1e-4)
    (tmp_path / "other.yaml").write_text("eval:\n  prompts: ['1', '2', '3']\n  seeds_per_prompt: 5\n")
    assert main(["--student", str(tmp_path / "run"), "--eval-config", str(tmp_path / "other.yaml"),
                 "--grid", str(tmp_path / "grid.png")]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["diversity"] != scored["diversity"] and (tmp_path / "grid.png").stat().st_size > 0
    (tmp_path / "bad.yaml").write_text("eval:\n  seeds_per_prompt: 1\n")
    assert main(["--student", str(tmp_path / "run"), "--eval-config", str(tmp_path / "bad.yaml")]) == 2
    assert "seeds_per_prompt" in capsys.readouterr().err
