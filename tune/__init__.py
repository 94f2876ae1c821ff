"""tune: the Ray Tune search over DP-DMD trainings.

    python -m tune.search --space search_spaces/quickstart.yaml

Public pieces: `load_space` / `SearchSpace` (the YAML schema) and `planned_trials` (the trials it
plans), `combined_objective`, the Pareto helpers (`pareto_front_mask`, `hypervolume_2d`). The
rooms, each importable on its own: `tune.cli` (the command line and its dry run), `tune.space`
(the space file), `tune.run` (the Tuner, the searcher, the run), `tune.schedulers` (ASHA and
MO-ASHA with rungs that survive --resume), `tune.trial` (the trainable `run_trial`, multi-GPU
trials, the objective, the shared anchor store `AnchorStore` read by
`dpdmd.anchors.CachedAnchors`), `tune.outputs` (results, front, files, plots, the W&B summary
run), `tune.storage` (URIs, preflight checks, the state backup) and `tune.simulate` (replays on
recorded curves).
"""

from .pareto import hypervolume_2d, pareto_front_mask
from .space import SearchSpace, SpaceError, load_space, planned_trials
from .trial.objective import combined_objective

__all__ = ["SearchSpace", "SpaceError", "combined_objective", "hypervolume_2d", "load_space", "pareto_front_mask",
           "planned_trials"]
