"""Tests of the real evaluator (dpdmd.evaluation.real): DINOv2 / DINOv3 / CLIP diversity, PickScore /
CLIP-score quality, each loaded from a tiny random-weight directory (tests/dpdmd/tiny_encoders.py)
through the same ``from_pretrained(dir)`` path as the real weights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dpdmd import ConfigError
from dpdmd.evaluation import RealEvaluator, check_evaluator_paths, make_real_evaluator
from dpdmd.evaluation.feature_stats import seed_excluded_precision

from . import tiny_encoders

PROMPTS = ["a photo of the cat", "an apple on a table"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Directories of every tiny model: {"dinov2", "dinov3", "dino_processor", "clip": DIR, "pickscore": {...}}."""
    root = tmp_path_factory.mktemp("weights")
    return {
        "dinov2": str(tiny_encoders.save_tiny_dinov2(root / "dinov2")),
        "dinov3": str(tiny_encoders.save_tiny_dinov3(root / "dinov3")),
        "dino_processor": str(tiny_encoders.save_dino_processor(root / "dino-processor")),
        "clip": str(tiny_encoders.save_tiny_clip(root / "clip")),
        "pickscore": tiny_encoders.save_tiny_pickscore(root / "pickscore"),
    }


def options(weights, **overrides):
    base = {
        "diversity_encoders": {"dinov2": weights["dinov2"], "clip": weights["clip"]},
        "quality_models": {"pickscore": weights["pickscore"], "clip_score": weights["clip"]},
        "batch_size": 4,  # smaller than P * N = 6, so batching is exercised
        "precision_k": 1,  # N = 3 seeds: k + 2 are needed for the precision against the teacher
    }
    return {**base, **overrides}


def grid(seed=0, p=2, n=3):
    return torch.rand(p, n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def with_teacher(evaluator, teacher_seed=99):
    """``evaluator`` reading samples against a random "teacher" grid of PROMPTS x 3 seeds."""
    evaluator.set_teacher_reference(evaluator.teacher_reference_state(grid(seed=teacher_seed), PROMPTS))
    return evaluator


@pytest.fixture(scope="module")
def evaluator(weights):
    return with_teacher(make_real_evaluator("real", device="cpu", **options(weights)))


# --- scores ---
def test_score_reports_every_space_and_quality_model(evaluator):
    metrics = evaluator.score(grid(), PROMPTS)
    assert set(metrics) == {"diversity", "diversity_dinov2", "diversity_clip", "pickscore", "clip_score",
                            "teacher_precision", "spectral", "fidelity", "quality"}
    assert metrics["diversity"] == metrics["diversity_dinov2"]  # the first encoder
    for key in ("diversity_dinov2", "diversity_clip"):
        assert 0.0 <= metrics[key] <= 2.0
    assert metrics["diversity_dinov2"] > 1e-4 and metrics["diversity_clip"] > 1e-4
    assert all(np.isfinite(v) for v in metrics.values())
    assert 0.0 <= metrics["teacher_precision"] <= 1.0
    assert 0.0 < metrics["spectral"] <= 1.0
    # the default quality_metric's preference score x the precision and the spectral match against the teacher
    assert metrics["quality"] == metrics["fidelity"] == pytest.approx(
        metrics["pickscore"] * metrics["teacher_precision"] * metrics["spectral"])
    teacher = evaluator.score(grid(seed=99), PROMPTS)  # the teacher's own samples: leave-one-out
    assert teacher["spectral"] == 1.0
    assert teacher["teacher_precision"] == pytest.approx(0.5 * sum(
        seed_excluded_precision(f, f, k=1) for f in evaluator._reference["features"]))
    assert evaluator.features(grid().reshape(6, 3, 32, 32)).shape == (6, 32)  # DINOv2 hidden size


def test_identical_images_in_a_row_have_no_diversity(evaluator):
    images = grid(seed=1, n=1).expand(2, 3, 3, 32, 32).clone()
    metrics = evaluator.score(images, PROMPTS)
    assert metrics["diversity_dinov2"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["diversity_clip"] == pytest.approx(0.0, abs=1e-5)


def test_grey_images_are_scored_as_rgb(evaluator):
    grey = grid(seed=2)[:, :, :1]
    rgb = grey.expand(-1, -1, 3, -1, -1)
    assert evaluator.score(grey, PROMPTS) == pytest.approx(evaluator.score(rgb, PROMPTS))


def _pil(images):
    """(B, 3, H, W) in [0, 1] -> 8-bit PIL images, written out independently of the evaluator."""
    arrays = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arrays]


def _hand_cosine(model_dir, processor_dir, images):
    """(P, N) cosines of images (P, N, 3, H, W) with PROMPTS, and the CLIPModel, computed directly."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(model_dir).eval().requires_grad_(False)
    processor = AutoImageProcessor.from_pretrained(processor_dir)
    tokenizer = AutoTokenizer.from_pretrained(processor_dir)
    p, n = images.shape[:2]
    pixels = processor(images=_pil(images.reshape(p * n, 3, 32, 32)), return_tensors="pt")["pixel_values"]
    image_embeds = model.get_image_features(pixel_values=pixels).pooler_output  # (P * N, D)
    tokens = tokenizer(PROMPTS, padding=True, truncation=True, max_length=16, return_tensors="pt")
    text_embeds = model.get_text_features(**tokens).pooler_output  # (P, D)
    image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
    text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
    return (image_embeds.reshape(p, n, -1) * text_embeds[:, None]).sum(-1), model


def test_pickscore_and_clip_score_match_hand_computation(weights, evaluator):
    images = grid(seed=3)
    metrics = evaluator.score(images, PROMPTS)
    cosine, model = _hand_cosine(weights["pickscore"]["model"], weights["pickscore"]["processor"], images)
    scale = model.logit_scale.exp()
    assert float(scale) == pytest.approx(50.0)  # set by the builder, not CLIP's default
    expected = float((scale * cosine / 26).mean())  # method.md: logit_scale * cos / 26
    assert metrics["pickscore"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    cosine, _ = _hand_cosine(weights["clip"], weights["clip"], images)
    assert metrics["clip_score"] == pytest.approx(float((100 * cosine).clamp(min=0).mean()), rel=1e-4, abs=1e-6)
    clip_quality = with_teacher(make_real_evaluator("real", device="cpu", quality_metric="clip_score", **options(weights)))
    assert clip_quality.score(images, PROMPTS)["quality"] == pytest.approx(
        metrics["clip_score"] * metrics["teacher_precision"] * metrics["spectral"])


def test_dinov3_and_single_encoder_configs(weights):
    dinov3 = {"model": weights["dinov3"], "processor": weights["dino_processor"]}
    ev = make_real_evaluator("real", device="cpu", diversity_encoders={"dinov3": dinov3},
                             quality_models={"clip_score": weights["clip"]}, precision_k=1)
    assert isinstance(ev, RealEvaluator) and ev.preference_key == "clip_score"  # first configured
    assert ev.quality_key == "fidelity"
    metrics = with_teacher(ev).score(grid(seed=4), PROMPTS)
    assert set(metrics) == {"diversity", "diversity_dinov3", "clip_score", "teacher_precision", "spectral", "fidelity",
                            "quality"}
    assert 0.0 < metrics["diversity"] <= 2.0 and np.isfinite(metrics["quality"])


def test_a_directory_used_twice_is_loaded_once(evaluator):
    assert evaluator.encoders["clip"].model is evaluator.scorers["clip_score"].model


# --- configuration errors ---
def test_missing_path_is_named_by_its_key(weights, tmp_path):
    missing = str(tmp_path / "nowhere" / "dinov2-base")
    problems = check_evaluator_paths(options(weights, diversity_encoders={"dinov2": missing}))
    assert len(problems) == 1
    assert problems[0].startswith(f"evaluator_options.diversity_encoders.dinov2: {missing} does not exist")
    assert "config.json" in problems[0]
    assert check_evaluator_paths(options(weights)) == []


def test_incomplete_directories_are_reported_per_key(weights, tmp_path):
    no_weights = tmp_path / "no-weights"
    shutil.copytree(weights["dinov2"], no_weights)
    (no_weights / "model.safetensors").unlink()
    processor_only = weights["pickscore"]["processor"]  # a CLIP processor, no model
    wrong_type = weights["clip"]
    problems = check_evaluator_paths(options(
        weights,
        diversity_encoders={"dinov2": str(no_weights), "dinov3": wrong_type},
        quality_models={"pickscore": {"model": processor_only, "processor": weights["dinov2"]}},
    ))
    text = "\n".join(problems)
    assert "evaluator_options.diversity_encoders.dinov2: " in text and "has no weights" in text
    assert "evaluator_options.diversity_encoders.dinov3: " in text and "model_type 'clip'" in text
    assert "evaluator_options.quality_models.pickscore.model: " in text and "no config.json" in text
    assert "evaluator_options.quality_models.pickscore.processor: " in text and "no tokenizer" in text
    assert len(problems) == 4


def test_malformed_options_list_every_problem(weights, tmp_path):
    missing = str(tmp_path / "clip-vit-large-patch14")
    problems = check_evaluator_paths({"diversity_encoders": {"sift": "/x", "clip": missing}, "quality_models": {},
                                      "dtype": "float64", "paths": {}})
    text = "\n".join(problems)
    for fragment in ("evaluator_options.paths: unknown option", "diversity_encoders.sift: unknown name",
                     "quality_models: give at least one quality model", "dtype: 'float64' is not allowed",
                     f"diversity_encoders.clip: {missing} does not exist"):  # paths still checked
        assert fragment in text
    assert len(problems) == 5
    assert check_evaluator_paths(options(weights), seeds_per_prompt=3) == []  # precision_k 1: 3 seeds suffice
    assert check_evaluator_paths(options(weights, precision_k=3), seeds_per_prompt=4) == [
        "eval.seeds_per_prompt: 4 seeds per prompt, but the real evaluator's teacher_precision with "
        "evaluator_options.precision_k=3 needs at least 5 (k neighbours among the teacher's other seeds); "
        "raise eval.seeds_per_prompt or lower precision_k"]
    assert check_evaluator_paths(options(weights, precision_k=0)) == [
        "evaluator_options.precision_k: must be a positive integer (the k-NN neighbour of the precision "
        "against the teacher), got 0"]
    assert check_evaluator_paths(options(weights, quality_models={"pickscore": {"model": "/m"}}))[0].startswith(
        "evaluator_options.quality_models.pickscore: expected a directory path, or a mapping")


def test_the_documented_yaml_is_well_formed():
    import textwrap

    import yaml

    import dpdmd.evaluation.real_options as real_options

    doc = real_options.__doc__
    example = yaml.safe_load(textwrap.dedent(doc[doc.index("    eval:"):doc.index("Names:")]))["eval"]
    problems = check_evaluator_paths(example["evaluator_options"], quality_metric=example["quality_metric"],
                                     prefix="eval.evaluator_options")
    # on a machine without those weights every problem is a missing directory, named by its key
    assert all(p.startswith("eval.evaluator_options.") and "does not exist" in p for p in problems)


def test_environment_variables_in_paths(weights, monkeypatch):
    monkeypatch.setenv("TINY_WEIGHTS_DIR", weights["dinov2"])
    assert check_evaluator_paths(options(weights, diversity_encoders={"dinov2": "$TINY_WEIGHTS_DIR"})) == []


def test_make_real_evaluator_with_missing_path_raises_a_clear_error(weights, tmp_path):
    missing = str(tmp_path / "PickScore_v1")
    bad = options(weights, quality_models={"pickscore": {"model": missing, "processor": weights["clip"]}})
    with pytest.raises(ConfigError, match=r"evaluator_options\.quality_models\.pickscore\.model: .* does not exist"):
        make_real_evaluator("real", device="cpu", **bad)


def test_unknown_quality_metric_lists_allowed(weights):
    with pytest.raises(ValueError, match="allowed: pickscore, clip_score, imagereward, hpsv21"):
        make_real_evaluator("real", device="cpu", quality_metric="aesthetic", **options(weights))
    with pytest.raises(ValueError, match="needs evaluator_options.quality_models.imagereward; configured"):
        make_real_evaluator("real", device="cpu", quality_metric="imagereward", **options(weights))
    problems = check_evaluator_paths(options(weights, quality_models={"clip_score": weights["clip"]}),
                                     quality_metric="pickscore")
    assert problems == ["quality_metric 'pickscore' needs evaluator_options.quality_models.pickscore; "
                        "configured quality models: clip_score"]
    with pytest.raises(ValueError, match="unknown evaluator 'clip'; allowed: digits, real"):
        make_real_evaluator("clip", device="cpu", **options(weights))


def test_wrong_checkpoint_with_missing_weights_is_refused(weights, tmp_path):
    # a CLIPVisionModel export (no visual projection) loaded where image embeddings are needed
    from transformers import CLIPVisionModel

    vision = tmp_path / "clip-vision"
    CLIPVisionModel.from_pretrained(weights["clip"]).save_pretrained(vision)
    tiny_encoders.save_clip_processor(vision)
    assert json.loads((vision / "config.json").read_text())["model_type"] == "clip_vision_model"
    with pytest.raises(ValueError, match=r"diversity_encoders\.clip: .* lacks .*visual_projection"):
        make_real_evaluator("real", device="cpu", **options(weights, diversity_encoders={"clip": str(vision)}))


def test_dinov3_processor_is_applied_without_torchvision(weights, tmp_path):
    """DINOv3's saved processor (torchvision-only in transformers 5) loads as TorchImageProcessor,
    with or without torchvision (its equality with the torchvision one: test_reference_metrics.py)."""
    from dpdmd.evaluation.image_ops import TorchImageProcessor

    processor = tmp_path / "dinov3-processor"
    processor.mkdir()
    config = {"image_processor_type": "DINOv3ViTImageProcessorFast", "size": {"height": 32, "width": 32},
              "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
              "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    (processor / "preprocessor_config.json").write_text(json.dumps(config))
    dinov3 = {"dinov3": {"model": weights["dinov3"], "processor": str(processor)}}
    assert check_evaluator_paths(options(weights, diversity_encoders=dinov3)) == []
    ev = make_real_evaluator("real", device="cpu", **options(weights, diversity_encoders=dinov3))
    assert isinstance(ev.encoders["dinov3"].image_processor, TorchImageProcessor)
    assert np.isfinite(with_teacher(ev).score(grid(seed=5), PROMPTS)["diversity_dinov3"])
    (processor / "preprocessor_config.json").write_text(json.dumps({**config, "do_pad": True}))
    problems = check_evaluator_paths(options(weights, diversity_encoders=dinov3))
    assert len(problems) == 1 and problems[0].startswith("evaluator_options.diversity_encoders.dinov3.processor: ")
    assert "do_pad is not supported" in problems[0]
