"""Search-space files: the schema (`schema`), reading and validating one completely before anything
starts (`load`, `checks`), and the trials it yields (`trials`).

A space file reads like a W&B sweep file::

    # python -m tune.search --space search_spaces/quickstart.yaml
    name: quickstart                  # experiment name (default: the file's stem)
    method: grid                      # grid | random | optuna_tpe | optuna_nsga2
    seed: 0                           # seeds the sampler and every trial's training stream
    num_samples: 1                    # grid: repeats of the grid; others: number of trials
    max_concurrent: 2                 # trials at once (0: as many as resources allow)
    backbones:                        # each backbone a trial may use, with its settings
      digits-flow:
        resources: {cpu: 1, gpu: 0}   # per trial (per worker with workers: N > 1, data-parallel,
                                      # networks sharded unless shard: false; cluster/README.md)
        options: {}                   # backbone constructor settings (e.g. path: /weights/sd35m)
        train: {}                     # training settings for this backbone only
    parameters:                       # searched; every other setting is fixed
      backbone: {values: [digits-flow, digits-eps]}
      anchor_k: {values: [5, 10, 20]}
      lambda_div: {distribution: log_uniform_values, min: 0.01, max: 0.5}
    train: {iterations: 300}          # fixed training settings (keys of dpdmd.TrainConfig)
    eval: {seeds_per_prompt: 8, every: 10}
    objective: {diversity_weight: 0.5, min_quality: 0.9, min_student_updates: 0}
    scheduler: {type: asha, grace_period: 10, reduction_factor: 2, brackets: 1}  # asha | moasha | fifo
    wandb: {enabled: true, project: dpdmd-tune}

A parameter is ``{value: x}`` (fixed), ``{values: [...]}`` (grid axis under ``method: grid``,
else a categorical choice), or ``{distribution: D, min: a, max: b}`` with D one of uniform,
log_uniform_values, int_uniform (not allowed under grid). Searchable: ``backbone`` and the
scalar keys of `dpdmd.TrainConfig` (anchor_k, lambda_div, lr, lr_fake, fake_updates, cfg_scale,
teacher_steps, batch_size, stop_grad, ...).

``scheduler.type``: ``asha`` stops trials early on the scalar ``objective`` (Ray's ASHA);
``moasha`` on the pair (diversity_score, quality_score) by non-dominated sorting at each rung,
ties broken by an epsilon-net (`tune.schedulers.moasha`); ``fifo`` runs every trial to the end. Both ASHAs
save their rungs in the experiment directory, so ``--resume`` continues them.

`load_space` returns a `SearchSpace` or raises `SpaceError` listing every problem as
``FILE: KEY: what is wrong; what is allowed`` (the schema: pydantic models, `tune.space.schema`
and `tune.space.sections`). A search runs at most 10,000 trials (grid points x num_samples). A
file whose first line is ``# yaml-language-server: $schema=./search-space.schema.json`` is
checked as it is typed by editors, against the JSON Schema ``python -m tune.space --json-schema``
writes (``search_spaces/search-space.schema.json``).
"""

from .checks import teacher_problems
from .load import load_space
from .schema import (BASELINE, DISTRIBUTIONS, MAX_TRIALS, METHODS, SCHEDULERS, SEARCHABLE, BackboneSpec, CheckpointSpec,
                     ObjectiveSpec, Param, SchedulerSpec, SearchSpace, SpaceError, WandbSpec, too_many_trials)
from .trials import baseline_trials, grid_size, grid_trials, iter_grid, planned_trials

__all__ = ["BASELINE", "DISTRIBUTIONS", "MAX_TRIALS", "METHODS", "SCHEDULERS", "SEARCHABLE", "BackboneSpec",
           "CheckpointSpec", "ObjectiveSpec", "Param", "SchedulerSpec", "SearchSpace", "SpaceError", "WandbSpec",
           "baseline_trials", "grid_size", "grid_trials", "iter_grid", "load_space", "planned_trials",
           "teacher_problems", "too_many_trials"]
