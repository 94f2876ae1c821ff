"""The reference protocol's models in the project's one environment: ImageReward, HPSv2.1,
VisualQuality-R1, pyiqa's MANIQA, DINOv3's preprocessing without torchvision.

Each model is a tiny random one written in the layout of its release (tiny_reference_models.py:
ImageReward.pt + med_config.json; HPS_v2.1_compressed.pt + a CLIP-H folder; a Qwen2.5-VL folder
saved with save_pretrained; a MANIQA state dict saved with torch.save) and loaded through the
evaluator options a user's real weights take.

Parity: the ImageReward and HPSv2.1 checkpoints are regenerated here deterministically (their
digests pinned) and scored; the stored numbers they are compared with are the ORIGINAL
implementations' scores of the same files, from the documented parity runs
(bench/imagereward_parity.py, bench/hps_parity.py -> bench/results/*.json).

Corruptions (Gaussian noise, blur, a lost prompt mode; dpdmd.evaluation.corruptions): a random
model's score is an arbitrary function of the pixels, so no raw score of these tiny models is
asserted to fall under noise or blur; what their construction fixes is asserted instead:

- a no-reference score (VisualQuality-R1, MANIQA) cannot see a lost prompt mode: the set's score
  moves exactly by the substituted images' own scores, (mean_0 - mean_1) / P, whatever the model;
- a prompt-conditioned score (ImageReward, HPSv2.1) can: the same images are read against another
  prompt; with random weights the direction is arbitrary (measured with these tiny models: the
  lost mode lowers both, while noise raises both and blur raises HPSv2.1: nothing to assert);
- the real evaluator's quality (``fidelity`` = HPSv2.1 x teacher_precision x spectral) falls under
  noise, blur and a lost mode with the tiny HPSv2.1 as its preference score: through ``spectral``
  (noise, blur) and ``teacher_precision`` (noise, lost mode), as with PickScore (test_real_objective.py).
ImageReward cannot be that preference factor (it can be negative), so it has no such assertion.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dpdmd import ConfigError
from dpdmd.evaluation import check_evaluator_paths, make_real_evaluator
from dpdmd.evaluation.corruptions import blur, drop_mode, gaussian_noise
from dpdmd.evaluation.real import to_pil_images
from dpdmd.evaluation.visualquality_r1 import QUESTION, VisualQualityR1, parse_answer, rating_or_nan, smart_resize

from . import stand_in_samples, tiny_encoders
from . import tiny_reference_models as tiny

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
PROMPTS = stand_in_samples.PROMPTS
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference-weights")
    return {"imagereward": tiny.save_tiny_imagereward(root / "ir"), "hpsv21": tiny.save_tiny_hps(root / "hps"),
            "visualquality_r1": str(tiny.save_tiny_visualquality_r1(root / "vq")),
            "dinov2": str(tiny_encoders.save_tiny_dinov2(root / "dinov2"))}


def _parity(name):
    return json.loads((RESULTS / f"{name}_parity.json").read_text())


def _digest(path, key=None):
    state = torch.load(path, map_location="cpu", weights_only=True)
    return tiny.state_digest(state[key] if key else state)


def _pairs():
    images = tiny.parity_images()
    return images, [tiny.PARITY_PROMPTS[i % len(tiny.PARITY_PROMPTS)] for i in range(len(images))]


# --- parity with the original implementations (stored numbers of the documented runs) ---
def test_imagereward_equals_the_original_on_the_tiny_checkpoint(weights):
    from dpdmd.evaluation.imagereward import load_imagereward

    reference = _parity("imagereward")
    assert _digest(Path(weights["imagereward"]["model"]) / "ImageReward.pt") == reference["checkpoint_digest"]
    model = load_imagereward(weights["imagereward"]["model"], weights["imagereward"]["processor"])
    images, prompts = _pairs()
    ours = model.score_pairs(images, prompts)
    assert ours.tolist() == pytest.approx(reference["original"], abs=1e-5)
    assert reference["max_abs_difference"] <= 1e-5 and reference["token_ids_equal"]


def test_hps_equals_hpsv2s_open_clip_on_the_tiny_checkpoint(weights):
    from dpdmd.evaluation.hps import load_hps

    reference = _parity("hps")
    assert _digest(weights["hpsv21"]["model"], "state_dict") == reference["checkpoint_digest"]
    scorer = load_hps(weights["hpsv21"]["model"], weights["hpsv21"]["processor"])
    images, prompts = _pairs()
    texts = scorer.embed_texts(tiny.PARITY_PROMPTS)[[tiny.PARITY_PROMPTS.index(p) for p in prompts]]
    ours = scorer.scores(scorer.embed_images(images)[:, None], texts)[:, 0]
    assert ours.tolist() == pytest.approx(reference["original"], abs=1e-5)


def test_conversions_refuse_foreign_checkpoints():
    from dpdmd.evaluation.hps import convert_open_clip
    from dpdmd.evaluation.imagereward import convert_checkpoint

    with pytest.raises(ValueError, match="not an ImageReward checkpoint: unknown keys \\['text_model.x'\\]"):
        convert_checkpoint({"text_model.x": torch.zeros(1)})
    with pytest.raises(ValueError, match="not an open_clip ViT CLIP checkpoint .* unknown keys \\['visual.trunk.x'\\]"):
        convert_open_clip({"visual.trunk.x": torch.zeros(1)})


# --- the evaluator options: paths checked before anything loads ---
def options(weights, **quality):
    return {"diversity_encoders": {"dinov2": weights["dinov2"]}, "quality_models": quality, "precision_k": 1}


def test_missing_paths_name_the_hub_id(weights, tmp_path):
    missing = str(tmp_path / "nowhere")
    problems = check_evaluator_paths(options(
        weights, imagereward={"model": missing, "processor": missing},
        hpsv21={"model": missing + "/HPS_v2.1_compressed.pt", "processor": missing},
        visualquality_r1=missing, pickscore={"model": missing, "processor": missing}), final=True)
    text = "\n".join(problems)
    for fragment in ("quality_models.imagereward.model: " + missing + " is not a directory; download ImageReward.pt "
                     "and med_config.json from THUDM/ImageReward",
                     "quality_models.imagereward.processor: ", "google-bert/bert-base-uncased",
                     "quality_models.hpsv21.model: ", "from xswu/HPSv2",
                     "quality_models.hpsv21.processor: ", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
                     "quality_models.visualquality_r1: ", "TianheWu/VisualQuality-R1-7B",
                     "quality_models.pickscore.model: ", "download it from yuvalkirstain/PickScore_v1"):
        assert fragment in text, (fragment, text)
    assert check_evaluator_paths(options(weights, imagereward=weights["imagereward"],
                                         hpsv21=weights["hpsv21"])) == []


def test_visualquality_r1_is_refused_at_rungs_and_imagereward_as_quality_metric(weights):
    vq = options(weights, hpsv21=weights["hpsv21"], visualquality_r1=weights["visualquality_r1"])
    assert check_evaluator_paths(vq, final=True) == []
    problems = check_evaluator_paths(vq, prefix="eval.evaluator_options")
    assert len(problems) == 1 and problems[0].startswith(
        "eval.evaluator_options.quality_models.visualquality_r1: visualquality_r1 is a final evaluation")
    ir = options(weights, imagereward=weights["imagereward"], hpsv21=weights["hpsv21"])
    (problem,) = check_evaluator_paths(ir, quality_metric="imagereward")
    assert problem.startswith("quality_metric 'imagereward': its score can be negative")
    with pytest.raises(ConfigError, match="its score can be negative"):
        make_real_evaluator("real", device="cpu", quality_metric="imagereward", **ir)
    # without quality_metric the first positive score is the preference factor
    assert make_real_evaluator("real", device="cpu", **ir).preference_key == "hpsv21"


# --- corruptions, through the real evaluator (see the module docstring for what is asserted) ---
def corrupted(images):
    return {"clean": images, "noise 0.2": gaussian_noise(images, 0.2), "blur 1": blur(images, 1.0),
            "lost mode": drop_mode(images, 1, 0)}


@pytest.fixture(scope="module")
def scored(weights):
    torch.set_num_threads(1)
    evaluator = make_real_evaluator(
        "real", device="cpu", final=True, batch_size=8, precision_k=3,
        diversity_encoders={"dinov2": weights["dinov2"]},
        quality_models={"hpsv21": weights["hpsv21"], "imagereward": weights["imagereward"]})
    images = stand_in_samples.shape_grid(6)
    evaluator.set_teacher_reference(evaluator.teacher_reference_state(images, PROMPTS))
    return {name: evaluator.score(x, PROMPTS) for name, x in corrupted(images).items()}


def test_fidelity_with_hps_falls_under_noise_blur_and_a_lost_mode(scored):
    clean = scored["clean"]
    assert clean["quality"] == clean["fidelity"] == pytest.approx(clean["hpsv21"] * clean["teacher_precision"])
    for name in ("noise 0.2", "blur 1", "lost mode"):
        assert scored[name]["fidelity"] < clean["fidelity"], (name, scored[name], clean)
    assert scored["noise 0.2"]["spectral"] < 1.0 and scored["blur 1"]["spectral"] < 1.0
    assert scored["lost mode"]["teacher_precision"] < clean["teacher_precision"]


def test_prompt_conditioned_scores_see_a_lost_mode(scored):
    """The lost mode's images are read against prompt 1: the score changes, in no set direction."""
    for name in ("hpsv21", "imagereward"):
        assert scored["lost mode"][name] != pytest.approx(scored["clean"][name], abs=1e-6)
        assert all(math.isfinite(scored[s][name]) for s in scored)


# --- VisualQuality-R1 ---
@pytest.mark.parametrize("answer, score", [
    ("<answer>3.85</answer>", 3.85), ("<think>blurry, 2 faces</think> <answer> 2.10 </answer>", 2.10),
    ("<answer>4</answer> then <answer>1.5</answer>", 1.5),  # the last answer counts
    ("The rating is 4.25.", 4.25),  # no tags: the whole text
    ("<answer>score: 3.5 of 5</answer>", 3.5),  # the first number of the answer
    ("<answer>excellent</answer>", None), ("", None), ("<answer>4.2", 4.2)])
def test_answers_are_parsed_as_published(answer, score):
    assert parse_answer(answer) == score


def test_a_number_outside_the_rating_range_is_not_a_rating():
    assert rating_or_nan("<answer>3.5</answer>") == 3.5 and rating_or_nan("<answer>5</answer>") == 5.0
    assert math.isnan(rating_or_nan("7777777777")) and math.isnan(rating_or_nan("<answer>0.5</answer>"))
    assert math.isnan(rating_or_nan("<answer>excellent</answer>"))


def test_smart_resize_keeps_multiples_of_28_within_the_pixel_budget():
    assert smart_resize(1024, 1024) == (1036, 1036)
    assert smart_resize(32, 32) == (56, 56)  # at least 4 x 28 x 28 pixels
    h, w = smart_resize(10000, 8000)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 16384 * 28 * 28
    with pytest.raises(ValueError, match="aspect ratio over 200"):
        smart_resize(1, 300)


def test_visualquality_r1_counts_unparsable_answers_never_a_silent_number(weights):
    """The tiny random model's answers are arbitrary bytes: whatever they are, every answer without
    a rating in [1, 5] is NaN, counted in visualquality_r1_unparsable, and left out of the mean."""
    evaluator = make_real_evaluator("real", device="cpu", final=True, batch_size=6, precision_k=1,
                                    diversity_encoders={"dinov2": weights["dinov2"]},
                                    quality_models={"hpsv21": weights["hpsv21"],
                                                    "visualquality_r1": weights["visualquality_r1"]})
    scorer = evaluator.scorers["visualquality_r1"]
    assert isinstance(scorer, VisualQualityR1)
    assert "Picture 1: <|vision_start|><|image_pad|><|vision_end|>" + QUESTION in scorer.text
    scorer.max_new_tokens = 12
    images = stand_in_samples.shape_grid(3)[:2]  # 2 prompts x 3 seeds: one batch of 6
    evaluator.set_teacher_reference(evaluator.teacher_reference_state(images, PROMPTS[:2]))
    metrics = evaluator.score(images, PROMPTS[:2])
    parsed = [rating_or_nan(a) for a in scorer.last_answers]
    assert len(parsed) == 6
    assert metrics["visualquality_r1_unparsable"] == sum(math.isnan(p) for p in parsed)
    scored = [p for p in parsed if not math.isnan(p)]
    if scored:
        assert metrics["visualquality_r1"] == pytest.approx(np.mean(scored))
    else:  # nothing parsable: NaN, never 0
        assert math.isnan(metrics["visualquality_r1"])


def test_a_no_reference_score_cannot_see_a_lost_mode(weights):
    """Whatever the model, a lost mode moves the set's mean by the substituted images' own scores."""
    from dpdmd.evaluation.visualquality_r1 import load_visualquality_r1

    scorer = load_visualquality_r1(weights["visualquality_r1"], dtype=torch.float32, max_new_tokens=6)
    images = stand_in_samples.shape_grid(2)  # 4 prompts x 2 seeds
    per_image = scorer.score_images(to_pil_images(images.reshape(8, 3, 32, 32))).reshape(4, 2)
    lost = scorer.score_images(to_pil_images(drop_mode(images, 1, 0).reshape(8, 3, 32, 32))).reshape(4, 2)
    assert torch.equal(torch.isnan(lost[1]), torch.isnan(per_image[0]))
    assert torch.allclose(lost[1].nan_to_num(-1), per_image[0].nan_to_num(-1))  # prompt 1 now scores as prompt 0


# --- MANIQA through pyiqa (the iqa extra) ---
@pytest.mark.skipif(importlib.util.find_spec("pyiqa") is None or not HAS_TORCHVISION,
                    reason="pyiqa (the iqa extra: pyiqa, timm, torchvision) is not installed")
def test_maniqa_loads_a_local_state_dict_and_scores(tmp_path):
    """A random MANIQA (pyiqa's own architecture, ViT-B/8 inside: not tiny, so 2 images at 224 px
    and one crop each) saved with torch.save as the released checkpoints are, loaded through the
    option path. A random MANIQA's score of noise or blur is arbitrary: only finiteness, range and
    the lost-mode identity of no-reference scores are asserted."""
    import pyiqa

    from dpdmd.evaluation.iqa import _no_timm_downloads, load_pyiqa

    with _no_timm_downloads():
        torch.manual_seed(0)
        net = pyiqa.create_metric("maniqa", device=torch.device("cpu"), pretrained=False).net
    weights_file = tmp_path / "ckpt_koniq10k.pt"
    torch.save(net.state_dict(), weights_file)
    assert check_evaluator_paths({"diversity_encoders": {"dinov2": "/nowhere"},
                                  "quality_models": {"maniqa": str(weights_file)}})[0].startswith(
        "evaluator_options.diversity_encoders.dinov2")  # the maniqa entry itself is fine
    scorer = load_pyiqa("maniqa", str(weights_file), test_sample=1)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 224, 224, generator=gen)
    scores = scorer.score_images(to_pil_images(images))
    assert scores.shape == (2,) and torch.isfinite(scores).all()


# --- DINOv3's preprocessing without torchvision ---
@pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision is not installed: transformers' DINOv3 processor, "
                    "the reference of this comparison, needs it (run in an environment with torchvision)")
@pytest.mark.parametrize("size", [(224, 224), (300, 200), (97, 131)])
def test_dinov3_torch_processor_equals_transformers_with_torchvision(size):
    from transformers import DINOv3ViTImageProcessor

    from dpdmd.evaluation.image_ops import TorchImageProcessor

    reference = DINOv3ViTImageProcessor()  # facebook/dinov3-vitl16-pretrain-lvd1689m's settings (224 x 224)
    ours = TorchImageProcessor(reference.to_dict())
    gen = torch.Generator().manual_seed(size[0])
    images = to_pil_images(torch.rand(3, 3, size[1], size[0], generator=gen))
    expected = reference(images=images, return_tensors="pt")["pixel_values"]
    got = ours(images)["pixel_values"]
    assert got.shape == expected.shape == (3, 3, 224, 224)
    assert torch.allclose(got, expected, atol=1e-6), float((got - expected).abs().max())
