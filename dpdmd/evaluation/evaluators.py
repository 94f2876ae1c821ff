"""Which evaluator scores a run, and what it refuses before anything runs.

``eval.evaluator`` names it ("auto": the backbone's own): ``digits`` (`DigitsEvaluator`, the
built-in backbones) or ``real`` (`RealEvaluator`: DINOv2 / CLIP / PickScore, the diffusers
backbones). Each is imported when it is asked for: the real one loads transformers' models.
"""

from __future__ import annotations

from ..backbones.base import Backbone
from ..config import EvalConfig


def make_evaluator(eval_config: EvalConfig, backbone: Backbone):
    """The evaluator the config names ("auto": the backbone's own)."""
    name = eval_config.evaluator
    if name == "auto":
        name = getattr(backbone, "default_evaluator", "digits")
    kwargs = dict(eval_config.evaluator_options)
    if eval_config.quality_metric != "auto":
        kwargs["quality_metric"] = eval_config.quality_metric
    if name == "digits":
        from .digits import DigitsEvaluator

        return DigitsEvaluator(**kwargs)
    from .real import make_real_evaluator  # DINOv2 / CLIP / PickScore (diffusers backbones)

    return make_real_evaluator(name, device=backbone.device, **kwargs)


def evaluator_class(name: str) -> type:
    """The class of evaluator ``name`` (imports it: the real one's module loads no model)."""
    if name == "digits":
        from .digits import DigitsEvaluator

        return DigitsEvaluator
    from .real import RealEvaluator

    return RealEvaluator


def prompt_problems(eval_config: EvalConfig, default_evaluator: str = "digits") -> list[str]:
    """The prompts of ``eval.prompts`` the evaluator cannot score (`Evaluator.prompt_problem`),
    as ``eval.prompts[i]: 'p' is not allowed; why; what is allowed``."""
    name = default_evaluator if eval_config.evaluator == "auto" else eval_config.evaluator
    cls = evaluator_class(name)
    return [f"eval.prompts[{i}]: {prompt!r} is not allowed; {why}" for i, prompt in enumerate(eval_config.prompts)
            if (why := cls.prompt_problem(prompt))]


def evaluator_problems(eval_config: EvalConfig, default_evaluator: str = "digits") -> list[str]:
    """What the configured evaluator refuses, found before anything runs: the prompts it cannot
    score (`prompt_problems`), its options, its model folders (real evaluators: read only small
    JSON files) and the seeds per prompt it needs (the digits evaluator's k-NN recall needs more
    than k samples per prompt)."""
    name = default_evaluator if eval_config.evaluator == "auto" else eval_config.evaluator
    prompts = prompt_problems(eval_config, default_evaluator) if name in ("digits", "real") else []
    return prompts + _option_problems(eval_config, name)


def _option_problems(eval_config: EvalConfig, name: str) -> list[str]:
    quality = None if eval_config.quality_metric == "auto" else eval_config.quality_metric
    n = eval_config.seeds_per_prompt
    if name == "digits":
        from .digits import DigitsEvaluator

        kwargs = dict(eval_config.evaluator_options, **({"quality_metric": quality} if quality else {}))
        try:
            evaluator = DigitsEvaluator(**kwargs)
        except (TypeError, ValueError) as err:
            return [f"eval.evaluator_options: {err}"]
        if n <= evaluator.k:
            return [f"eval.seeds_per_prompt: {n} is not allowed; the digits evaluator's k-NN recall "
                    f"(k = {evaluator.k}) needs more than {evaluator.k} seeds per prompt: use >= {evaluator.k + 1}"]
        return []
    from .real_options import check_evaluator_paths

    return check_evaluator_paths(eval_config.evaluator_options, prefix="eval.evaluator_options",
                                 quality_metric=quality, seeds_per_prompt=n)
