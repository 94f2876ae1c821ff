"""Which prompts a run evaluates on: its config's, else its backbone's defaults.

Its own module because both the evaluation protocol (`dpdmd.evaluation.protocol`) and the cache
keys (`dpdmd.data.cache_keys`: the teacher reference is keyed by its prompts) need it, and the
protocol reads the cache keys.
"""

from __future__ import annotations


def eval_prompts(config, backbone) -> list[str]:
    """``config.eval.prompts``, or ``backbone.default_prompts`` when the config gives none."""
    return list(config.eval.prompts) or list(backbone.default_prompts)
