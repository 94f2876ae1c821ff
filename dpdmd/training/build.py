"""A run built from its config: the device, the backbone, the `DPDMD` networks, and the checks that
only the backbone can make (its prompts, its device, the evaluator's options), made before
anything is written or trained. The command lines (`dpdmd.cli`) and the search call them too."""

from __future__ import annotations

import torch

from ..backbones import Backbone, get_backbone
from ..config import ConfigError, TrainConfig
from ..evaluation.evaluators import evaluator_problems
from ..method import DPDMD


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError([f"device: {name!r} asked for, but torch sees no CUDA device; use 'cpu' or 'auto'"])
    return torch.device(name)


def build_backbone(config: TrainConfig) -> Backbone:
    """The backbone the config names, with its settings; a bad name or option is a ConfigError."""
    try:
        guidance = {} if config.cfg_scale is None else {"cfg_scale": config.cfg_scale}
        return get_backbone(config.backbone, teacher_steps=config.teacher_steps, student_steps=config.student_steps,
                            device=resolve_device(config.device), **guidance, **config.backbone_options)
    except (ValueError, FileNotFoundError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError([f"backbone: {err}"]) from None


def check(config: TrainConfig, backbone: Backbone) -> None:
    """What only the backbone can refuse (its prompts, its device), reported at once. The ranges
    were checked when ``config`` was built (`TrainConfig`)."""
    from ..parallel.attention_impl import fa4_problem
    from ..parallel.fp8 import fp8_problem

    problems = []
    if config.attention_backend == "fa4" and (problem := fa4_problem(backbone.device)) is not None:
        problems.append(f"attention_backend: 'fa4' cannot run: {problem}; use 'sdpa'")
    for key, mode in (("fp8", config.fp8), ("fp8_teacher", "rowwise" if config.fp8_teacher else "none")):
        if (problem := fp8_problem(mode, backbone.device)) is not None:
            fix = "use 'none'" if key == "fp8" else "set it false"
            problems.append(f"{key}: {getattr(config, key)!r} cannot run: {problem}; {fix}")
    if config.optimizer == "adamw_offload" and backbone.device.type != "cuda":
        problems.append(f"optimizer: 'adamw_offload' offloads GPU states to the host; the device is "
                        f"{backbone.device}: use 'adamw' or 'adamw8bit'")
    for key, prompts in (("prompts", config.prompts), ("eval.prompts", config.eval.prompts)):
        try:
            backbone.validate_prompts(prompts)
        except ValueError as err:
            problems.append(f"{key}: {err}")
    if not problems:  # the evaluator's options, weights and needs (before anything is trained)
        problems = evaluator_problems(config.eval, getattr(backbone, "default_evaluator", "digits"))
    if problems:
        raise ConfigError(problems)


def build_method(config: TrainConfig, backbone: Backbone) -> DPDMD:
    lr = config.lr if config.lr is not None else backbone.default_lr
    method = DPDMD(backbone, lambda_div=config.lambda_div, stop_grad=config.stop_grad, lr_student=lr,
                   lr_fake=config.lr_fake if config.lr_fake is not None else lr,
                   weight_decay=config.weight_decay, betas=(config.beta1, config.beta2),
                   grad_clip=config.grad_clip, mixed_precision=config.mixed_precision,
                   optimizer=config.optimizer)
    # Before compiling: the compiled graphs trace the FP8 layers and the attention path chosen here.
    from ..parallel.attention_impl import use_attention_backend
    from ..parallel.fp8 import apply_fp8

    if config.fp8 != "none" or config.fp8_teacher:
        apply_fp8(method, config.fp8, teacher=config.fp8_teacher)
    use_attention_backend(config.attention_backend, backbone.device)  # "sdpa" undoes an earlier run's "fa4"
    if config.compile:
        from ..data.disk_cache import cache_dir
        from ..parallel.acceleration import compile_repeated_blocks, configure_compile_cache

        configure_compile_cache(cache_dir() / "compile")
        for net in (method.teacher, method.student, method.fake):
            compile_repeated_blocks(net, dynamic=False)
    return method
