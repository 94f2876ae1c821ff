"""What a valid space file asks that only a built backbone, the weights on disk or the teacher can
refuse, found before anything starts (the schema, `tune.space.schema`, has checked every key and
the `TrainConfig` at the space's corners): the prompts against each digits backbone and its
evaluator, the diffusers weights and the real evaluator's folders named by their paths, and
(`teacher_problems`) a teacher that would score 0 on the evaluation set, which would fail every
trial."""

from __future__ import annotations

from collections.abc import Callable

from dpdmd.config import ConfigError

from .schema import SearchSpace
from .trials import planned_trials


def check_trials(space: SearchSpace, check_weights: bool) -> list[str]:
    """What each backbone refuses at the space's base point: its prompts and its evaluator's
    (digits backbones, cheap to build), its weights folder and the real evaluator's folders."""
    from dpdmd.training.build import build_backbone, check

    problems: list[str] = []
    for backbone in space.backbone_names():
        config = space.train_config({**space.base_point(), "backbone": backbone})
        if check_weights and not backbone.startswith("digits"):  # is the weights directory there?
            problems.extend(_weights_problems(backbone, config.backbone_options))
        if backbone.startswith("digits"):  # cheap to build: check the prompts against it
            try:
                check(config, build_backbone(config.replace(device="cpu")))
            except ConfigError as err:  # "prompts: ..." is train.prompts in the file
                problems.extend(p if p.startswith("eval.") else f"train.{p}" for p in err.problems)
        elif check_weights:  # the real evaluator's folders (digits backbones: in check above)
            from dpdmd.evaluation import evaluator_problems

            problems.extend(evaluator_problems(config.eval, "real"))
    return list(dict.fromkeys(problems))


def _weights_problems(backbone: str, options: dict) -> list[str]:
    """The diffusers backbones' weights directory, checked without loading anything."""
    from dpdmd.backbones.registry_real import check_weights_dir

    path = options.get("path")
    if path is None:
        return [f"backbones.{backbone}.options.path: not set; set it to a local diffusers folder of the "
                f"{backbone} weights (no weights are downloaded here), or run search_spaces/quickstart.yaml, "
                f"which needs none"]
    try:
        check_weights_dir(path, backbone)
    except (FileNotFoundError, ValueError) as err:
        hint = "" if "$" not in str(path) else " (an environment variable in the path is not set)"
        return [f"backbones.{backbone}.options.path: {err}{hint}"]
    return []


def _evaluated_on_cpu(config) -> bool:
    """Whether ``config``'s evaluator is the built-in digits one (cheap enough to run here)."""
    from dpdmd.backbones import backbone_class

    name = config.eval.evaluator
    if name == "auto":
        name = getattr(backbone_class(config.backbone)[0], "default_evaluator", "digits")
    return name == "digits"


def teacher_problems(space, *, reference: Callable | None = None) -> list[str]:
    """Every trial is scored in teacher units (`tune.trial.objective`: student / teacher), so a teacher
    that scores 0 on the evaluation set (4 samples of a prompt can all miss the real digits' k-NN
    balls: precision, hence fidelity, 0) would fail every trial. Computed here, before Ray, for
    the built-in (digits) evaluator: its teacher reference is cached on disk, so the trials read
    it instead of computing it again. The real evaluators' teachers need the GPU: not here.

    ``reference(config) -> {"diversity", "quality", ...}`` (default: `dpdmd.evaluation`'s cached
    teacher reference)."""
    import json

    points = planned_trials(space) if space.method == "grid" else \
        [{**space.base_point(), "backbone": b} for b in space.backbone_names()]
    configs = {}
    for point in points:
        config = space.train_config(point).replace(device="cpu")
        if _evaluated_on_cpu(config):
            what = {k: config.to_dict()[k] for k in ("backbone", "backbone_options", "teacher_steps", "cfg_scale", "eval")}
            configs.setdefault(json.dumps(what, sort_keys=True, default=str), config)  # what the reference depends on
    problems = []
    for config in configs.values():
        scores = (reference or _teacher_scores)(config)
        low = [f"{name} {scores[name]:g}" for name in ("diversity", "quality") if not scores[name] > 0]
        if low:
            metric = config.eval.quality_metric if config.eval.quality_metric != "auto" else "fidelity"
            problems.append(
                f"eval.seeds_per_prompt: {config.eval.seeds_per_prompt} is too few here: the teacher ({config.backbone}, "
                f"teacher_steps {config.teacher_steps}) scores {', '.join(low)} on the evaluation set "
                f"({config.eval.seeds_per_prompt} seeds x {len(config.eval.prompts) or 'default'} prompts; quality is "
                f"{metric}), and every trial is scored in teacher units (student / teacher), so every trial would "
                "fail. Allowed: a teacher scoring above 0: more eval.seeds_per_prompt or eval.prompts, or "
                "eval.quality_metric: class_prob (no k-NN precision)")
    return problems


def _teacher_scores(config) -> dict:
    """The teacher's scores on ``config``'s evaluation set (cached on disk, `dpdmd.evaluation`)."""
    import torch

    from dpdmd.evaluation import teacher_reference
    from dpdmd.data.prompt_cache import PromptEmbeddingCache
    from dpdmd.training.build import build_backbone, build_method

    backbone = build_backbone(config)
    torch.manual_seed(config.seed)
    method = build_method(config, backbone)
    return teacher_reference(config, backbone, method.teacher, PromptEmbeddingCache(backbone))[0]
