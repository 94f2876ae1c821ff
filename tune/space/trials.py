"""The trials a space yields, each a flat dict of overrides of its `TrainConfig` (keys: ``backbone``,
the searched scalars, ``baseline``; `SearchSpace.train_config` turns one into the trial's config):
the vanilla-DMD baselines, the grid's points, and the plan handed out before any sampler."""

from __future__ import annotations

import itertools

from dpdmd.config import vanilla_dmd

from .schema import BASELINE, SearchSpace, grid_points


def grid_size(space: SearchSpace) -> int | None:
    """Trials a grid search launches (None for samplers)."""
    return grid_points(space.method, space.parameters) * space.num_samples if space.method == "grid" else None


def iter_grid(space: SearchSpace):
    """Every point of a grid space, as dicts of the searched values (for plans and tests)."""
    names = [n for n, p in space.parameters.items() if p.values is not None]
    for combo in itertools.product(*(space.parameters[n].values for n in names)):
        yield dict(zip(names, combo))


def baseline_trials(space: SearchSpace) -> list[dict]:
    """One vanilla-DMD trial per backbone, for reference, unless the space has one already. Its
    searched settings that the base point pins take its value (the anchor knob its smallest:
    unused, vanilla DMD asks for no anchor), the others their typical value (`Param.typical`)."""
    vanilla = vanilla_dmd()
    if not space.baseline or any(space.parameters[n].values and v in space.parameters[n].values
                                 for n, v in vanilla.items() if n in space.parameters):
        return []
    base, out = space.base_point(), []
    for backbone in space.backbone_names():
        trial = {BASELINE: True, **vanilla}
        if "backbone" in space.parameters:
            trial["backbone"] = backbone
        for name, p in space.parameters.items():
            if p.value is None and name in base:
                trial.setdefault(name, base[name])
        for name, p in space.parameters.items():
            trial.setdefault(name, p.typical())
        out.append(trial)
    return out


def grid_trials(space: SearchSpace) -> list[dict]:
    """Every grid point (``num_samples`` times), with the fixed parameters."""
    fixed = space.fixed_values()
    return [{BASELINE: False, **fixed, **point} for point in iter_grid(space)] * space.num_samples


def planned_trials(space: SearchSpace) -> list[dict]:
    """The trials handed out before any sampler: the baselines, then the grid's points."""
    return baseline_trials(space) + (grid_trials(space) if space.method == "grid" else [])
