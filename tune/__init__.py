"""tune: the Ray Tune search over DP-DMD trainings.

    python -m tune.search --space search_spaces/quickstart.yaml

Public pieces: `load_space` / `SearchSpace` (the YAML schema), `run_trial` (the trainable),
`combined_objective`, the shared anchor store (`AnchorStore`, read by `dpdmd.anchors.CachedAnchors`),
the Pareto helpers (`pareto_front_mask`, `hypervolume_2d`), the plots and the W&B summary run.
"""

from .trial.objective import combined_objective
from .pareto import hypervolume_2d, pareto_front_mask
from .space import SearchSpace, SpaceError, load_space

__all__ = ["SearchSpace", "SpaceError", "combined_objective", "hypervolume_2d", "load_space", "pareto_front_mask"]
