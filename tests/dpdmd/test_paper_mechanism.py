"""Slow (`pytest -m slow`, ~4 min): the mechanism the paper's claim rests on, on digits-flow.

What is asserted is what must hold whatever the outcome of the claim: vanilla DMD loses
diversity against the untrained 4-step student, and L_div pins DP-DMD's first step to the
teacher's anchored target (closer than DMD's first step). Whether that keeps more diversity at
the end is measured, not asserted, by `bench/paper_claim.py` (README, "Measured results").
"""

import pytest
import torch

from dpdmd import EvalConfig, TrainConfig, train
from dpdmd.anchors import teacher_anchors
from dpdmd.config import from_mapping
from dpdmd.evaluation import eval_noise, eval_prompts, generate, make_evaluator, score, teacher_reference
from dpdmd.data.prompt_cache import PromptEmbeddingCache
from dpdmd.training.build import build_backbone, build_method
from dpdmd.training.checkpoints import CHECKPOINT

pytestmark = pytest.mark.slow


def load_student(run_dir):
    state = torch.load(run_dir / CHECKPOINT / "state.pt", map_location="cpu", weights_only=False)
    config = from_mapping(state["config"])
    backbone = build_backbone(config)
    method = build_method(config, backbone)
    method.load_state_dict(state["method"])
    return config, backbone, method


def first_step_gap(method, backbone, k):
    """mean (v1 - v_tgt)^2 of the student's first step against the teacher's K-anchor target."""
    embed = PromptEmbeddingCache(backbone)
    x1 = eval_noise(8, backbone.latent_shape)
    gaps = []
    with torch.no_grad():
        for prompt in backbone.default_prompts:
            cond, uncond = embed([prompt] * 8), embed([""] * 8)
            target = teacher_anchors(backbone, method.teacher, x1, cond, uncond, [k])[k]
            v1 = backbone.predict(method.student, x1, backbone.schedule.student_levels[0], cond)
            gaps.append((v1 - target).pow(2).mean())
    return float(torch.stack(gaps).mean())


def test_dmd_loses_diversity_and_l_div_pins_the_first_step(tmp_path):
    base = dict(backbone="digits-flow", iterations=600, device="cpu", eval=EvalConfig(every=0, seeds_per_prompt=8))
    dmd_dir, dp_dir = tmp_path / "dmd", tmp_path / "dpdmd"
    dmd = train(TrainConfig(**base, lambda_div=0.0), out_dir=dmd_dir, progress=False)
    dp = train(TrainConfig(**base, anchor_k=20, lambda_div=0.5), out_dir=dp_dir, progress=False)

    config, backbone, untrained = load_student(dmd_dir)
    untrained = build_method(config, backbone)  # the teacher's weights, sampled in 4 steps
    prompts = eval_prompts(config, backbone)
    evaluator, embed = make_evaluator(config.eval, backbone), PromptEmbeddingCache(backbone)
    teacher_reference(config, backbone, untrained.teacher, embed, evaluator)
    start = score(evaluator, generate(backbone, untrained.sample, prompts, 8, embed), prompts)
    print(f"\ndiversity: untrained {start['diversity']:.4f}, DMD {dmd['diversity']:.4f}, "
          f"DP-DMD K=20 lambda=0.5 {dp['diversity']:.4f}")
    assert dmd["diversity"] < start["diversity"] - 0.005

    _, _, dmd_method = load_student(dmd_dir)
    _, _, dp_method = load_student(dp_dir)
    gap_dmd, gap_dp = first_step_gap(dmd_method, backbone, 20), first_step_gap(dp_method, backbone, 20)
    print(f"first-step gap to the K=20 target: DMD {gap_dmd:.4f}, DP-DMD {gap_dp:.4f}")
    assert gap_dp < gap_dmd
