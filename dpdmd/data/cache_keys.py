"""Every cache key, derived in one place from what the cached thing depends on.

A key must name every input that changes the cached result: one forgotten gives silently stale
results. So each kind lists its inputs here, once, each kind extending the one below it:

- ``embedding`` (a prompt's text embedding; `text_key`): the weights (their folder's identity for
  the diffusers backbones, else the backbone's name and options) and the backbone's embedding
  settings (dtype, sequence length, ...);
- ``teacher`` (what the teacher computes): + the teacher's steps and its effective CFG scale;
- ``anchor`` (the teacher anchors of one iteration, `dpdmd.anchors.shared_anchors`): + what the
  iteration stream draws from: seed, batch size, training prompts, latent shape;
- ``teacher_reference`` (the teacher's scores and samples, `dpdmd.evaluation`): + the evaluation
  set and the evaluator.

The keys are plain dicts; `dpdmd.data.disk_cache.config_hash` turns one into a short name.
"""

from __future__ import annotations

from typing import Any

from .prompts import eval_prompts

KINDS = ("embedding", "teacher", "anchor", "teacher_reference")
# What an evaluator returns, bumped when it changes, so no stale teacher score normalises a new one
# (and `bench/tabular.py` re-records runs scored under an older one). 2: digits quality =
# fidelity; 3: real quality = preference x precision against the teacher's features, saved beside
# the scores; 4: fidelity x the spectral match, digits against the real digits, real against the
# teacher's band powers saved with its features; 5: digits spectral against the teacher's too.
REFERENCE_VERSION = 5


def text_key(backbone, options: dict | None = None) -> dict[str, Any]:
    """What a prompt's embedding depends on besides the prompt (the diffusers backbones' disk
    cache and the search's shared prompt cache both use it)."""
    identity = getattr(backbone, "identity", None)
    key = {"identity": identity} if identity is not None else {"backbone": backbone.name, "options": options or {}}
    settings = getattr(backbone, "embedding_settings", None)
    return {**key, **(settings() if settings else {})}


def cache_key(kind: str, config, backbone, **extra) -> dict[str, Any]:
    """The key of a cached ``kind`` (one of `KINDS`) for a run of ``config`` on ``backbone``;
    ``extra`` adds what the caller adds (e.g. a data-parallel rank)."""
    if kind not in KINDS:
        raise ValueError(f"cache kind {kind!r} is unknown; known: {', '.join(KINDS)}")
    key = {"kind": kind, "backbone": config.backbone, **text_key(backbone, config.backbone_options)}
    if kind != "embedding":
        key.update(teacher_steps=config.teacher_steps, cfg_scale=backbone.cfg_scale)
    if kind == "anchor":
        key.update(seed=config.seed, batch_size=config.batch_size, prompts=list(config.prompts),
                   latent_shape=list(backbone.latent_shape))
    if kind == "teacher_reference":
        key.update(prompts=eval_prompts(config, backbone), seeds=config.eval.seeds_per_prompt,
                   evaluator=config.eval.evaluator, quality_metric=config.eval.quality_metric,
                   evaluator_options=config.eval.evaluator_options,
reference=REFERENCE_VERSION)
    return {**key, **extra}
