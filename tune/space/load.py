"""Reading a search-space file (`load_space`): the YAML read strictly (`dpdmd.config.load_yaml`),
then validated whole by the schema (`tune.space.schema.SearchSpace`: every section, the rules
across them, the `TrainConfig` at the space's corners), then what only a built backbone or the
weights on disk can refuse (`tune.space.checks`). Raises `SpaceError` listing every problem as
``FILE: KEY: what is wrong; what is allowed``."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from dpdmd.config import ConfigError, load_yaml
from dpdmd.schema import problems_of

from .checks import check_trials
from .schema import SearchSpace, SpaceError


def load_space(path: str | Path, *, check_weights: bool = True) -> SearchSpace:
    """Read and validate a search-space file completely; raises `SpaceError` with every problem."""
    path = Path(path)
    try:
        data = load_yaml(path)
    except ConfigError as err:
        raise SpaceError(path, err.problems) from None
    try:
        space = SearchSpace.model_validate(data, context={"path": path})
    except ValidationError as err:
        raise SpaceError(path, problems_of(err, SearchSpace)) from None
    problems = check_trials(space, check_weights)
    if problems:
        raise SpaceError(path, problems)
    return space
