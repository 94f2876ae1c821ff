"""A short distillation on each built-in backbone improves its quality over the untrained student
(the teacher's weights sampled in 4 steps), on the same evaluation set."""

import pytest

from dpdmd import EvalConfig, TrainConfig, train
from dpdmd.evaluation import eval_prompts, generate, make_evaluator, score, teacher_reference
from dpdmd.data.prompt_cache import PromptEmbeddingCache
from dpdmd.training.build import build_backbone, build_method


@pytest.mark.parametrize("backbone", ["digits-flow", "digits-eps"])
def test_short_distillation_improves_quality(backbone):
    config = TrainConfig(backbone=backbone, iterations=120, batch_size=8, device="cpu",
                         eval=EvalConfig(seeds_per_prompt=8, every=0))
    b = build_backbone(config)
    untrained = build_method(config, b)
    prompts = eval_prompts(config, b)
    evaluator, embed = make_evaluator(config.eval, b), PromptEmbeddingCache(b)
    teacher_reference(config, b, untrained.teacher, embed, evaluator)  # the reference every trial reads against
    before = score(evaluator, generate(b, untrained.sample, prompts, 8, embed), prompts)
    after = train(config, progress=False)
    assert after["student_updates"] == 20
    assert after["quality"] > before["quality"] + 0.01, (before["quality"], after["quality"])
    assert after["precision"] >= before["precision"] - 0.05
