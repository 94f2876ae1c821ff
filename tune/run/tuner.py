"""The search's Ray Tune `Tuner`: the trainable with each trial's resources, the searcher, the
scheduler, the checkpoints kept, the callbacks (the state backup, the cache statistics, W&B per
trial), or the Tuner restored from the storage under ``--resume``."""

from __future__ import annotations

import argparse
import sys

from ..space.schema import SearchSpace
from ..storage.uri import filesystem, join_uri


def build_tuner(space: SearchSpace, args: argparse.Namespace, *, storage: str, cache: dict):
    """The `ray.tune.Tuner` of the search (restored from the storage under ``--resume``)."""
    from ray import tune

    from ..schedulers import STATE_FILE as SCHEDULER_STATE_FILE
    from ..schedulers import make_scheduler
    from ..schedulers.persistent import clear_state
    from ..space.trials import planned_trials
    from ..storage.state_backup import StateBackup, clear_copy, restore_if_damaged
    from ..trial.multi_gpu import build_trainable
    from .searcher import build_searcher
    from .trial_metadata import LightTrialMetadata

    name = args.name or space.name
    trainable = build_trainable(space, cache, experiment=join_uri(storage, name))  # a placement group per trial
    # Ray's restore brings back the scheduler pickled at the start, with empty rungs: ours keep
    # theirs in the experiment directory and reload them before the first resumed trial is added.
    state_uri = join_uri(storage, name, SCHEDULER_STATE_FILE)
    if args.resume:
        restored = restore_if_damaged(join_uri(storage, name))  # a full disk left Ray's own state cut short
        if restored:
            print(f"warning: {restored}", file=sys.stderr)
        return tune.Tuner.restore(join_uri(storage, name), trainable, resume_unfinished=True, resume_errored=True)
    clear_state(state_uri)  # a fresh search of an old name: the old rungs are not ours
    clear_copy(join_uri(storage, name))
    callbacks = [StateBackup(join_uri(storage, name)),  # restored with the Tuner: kept after a resume too
                 LightTrialMetadata()]
    if cache["enabled"]:  # the anchor store's counts, kept with the experiment (added up over a resume)
        from ..trial.cache_stats import STATS_FILE, StatsRecorder

        clear_state(join_uri(storage, name, STATS_FILE))
        callbacks.append(StatsRecorder(cache["spill_uri"], join_uri(storage, name, STATS_FILE)))
    if space.wandb.enabled and space.wandb.per_trial:
        from ..outputs.wandb import WandbLoggerWithoutKeyInRuntimeEnv

        callbacks.append(WandbLoggerWithoutKeyInRuntimeEnv(project=space.wandb.project, entity=space.wandb.entity, group=name))
    run_config = tune.RunConfig(
        name=name, storage_path=storage, callbacks=callbacks, verbose=1,
        checkpoint_config=best_checkpoint_config(), failure_config=tune.FailureConfig(max_failures=1))
    # the searcher says when the plan is done (grid); samplers run num_samples after the baselines
    sampled = 0 if space.method == "grid" else (args.num_samples or space.num_samples)
    scheduler = make_scheduler(space.scheduler, max_t=space.max_t(), state_uri=state_uri)
    tune_config = tune.TuneConfig(search_alg=build_searcher(space), scheduler=scheduler,
                                  num_samples=len(planned_trials(space)) + sampled,
                                  max_concurrent_trials=space.max_concurrent or None, reuse_actors=False)
    return tune.Tuner(trainable, run_config=run_config, tune_config=tune_config)


def best_checkpoint_config():
    """Each trial's checkpoints are its students at its new bests by ``shown_objective`` (J where
    eligible for the front; `tune.trial.saves`), so they rise in score: Ray keeps the best one,
    which is also its latest (Ray 2.60's checkpoint manager never deletes the latest registered
    checkpoint), and ``Result.get_best_checkpoint("shown_objective", "max")`` is the student the
    search shows and recommends (`tune.outputs.kept` reads it as the trial's last report with a
    checkpoint). The resumable state is not a Ray checkpoint: it is in the trial's
    folder, ``resume/`` (`tune.trial.saves.ResumeStore`)."""
    from ray import tune

    return tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="shown_objective",
                               checkpoint_score_order="max")


def experiment_exists(storage: str, name: str) -> bool:
    import pyarrow.fs as pafs

    fs, root = filesystem(join_uri(storage, name, "tuner.pkl"))
    return fs.get_file_info(root).type == pafs.FileType.File

