"""Search-space validation: every shipped space loads; every bad one is refused with the file, the
key and what is allowed, all problems at once, exit status 2 and nothing started."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tune.space import SpaceError, load_space

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "search_spaces").glob("*.yaml"))

GOOD = {
    "name": "t",
    "backbones": {"digits-flow": {"resources": {"cpu": 1}}},
    "parameters": {"anchor_k": {"values": [5, 10]}, "lambda_div": {"values": [0.05]}},
    "train": {"iterations": 12},
}


def write(tmp_path, data, name="space.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def with_(**changes):
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return data


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.stem == "quickstart"], ids=lambda p: p.name)
def test_shipped_builtin_spaces_load(path):
    space = load_space(path)
    assert space.backbone_names()


def test_good_space_loads(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    assert space.anchor_ks() == [5, 10]
    config = space.train_config({"anchor_k": 10, "lambda_div": 0.05})
    assert config.backbone == "digits-flow" and config.iterations == 12 and config.seed == 0


BAD = [
    ("unknown top-level key", with_(methd="grid"), "methd: unknown key"),
    ("unknown method", with_(method="bayes"), "method: 'bayes' is unknown; allowed: grid, random, optuna_tpe, optuna_nsga2"),
    ("unknown backbone", with_(backbones={"sd99": {}}), "backbones.sd99: unknown backbone; available:"),
    ("K above teacher steps", with_(parameters__anchor_k={"values": [5, 31]}), "parameters.anchor_k (backbone digits-flow): 31 is not allowed; K must be an integer in 1..teacher_steps (= 30)"),
    ("K above a smaller teacher", with_(train__teacher_steps=8), "parameters.anchor_k (backbone digits-flow): 10 is not allowed"),
    ("negative lambda", with_(parameters__lambda_div={"values": [-0.1]}), "parameters.lambda_div (backbone digits-flow): -0.1 is not allowed; it must be >= 0"),
    ("wrong type", with_(train__iterations="many"), "train.iterations (backbone digits-flow): expected int, got 'many'"),
    ("unsearchable parameter", with_(parameters__colour={"values": [1]}), "parameters.colour: 'colour' cannot be searched"),
    ("distribution under grid", with_(parameters__lambda_div={"distribution": "log_uniform_values", "min": 0.01, "max": 1}), "method grid needs values, not a distribution"),
    ("bad distribution", with_(method="random", parameters__lambda_div={"distribution": "normal", "min": 0, "max": 1}), "parameters.lambda_div.distribution: 'normal' is unknown; allowed: uniform, log_uniform_values, int_uniform"),
    ("log-uniform from zero", with_(method="random", parameters__lambda_div={"distribution": "log_uniform_values", "min": 0, "max": 1}), "log_uniform_values needs min > 0"),
    ("min above max", with_(method="random", parameters__lambda_div={"distribution": "uniform", "min": 1, "max": 0.5}), "min (1) must be below max (0.5)"),
    ("unknown train key", with_(train__lambda_dvi=0.1), "train.lambda_dvi (backbone digits-flow): unknown key"),
    ("unknown prompt", with_(eval={"prompts": ["a cat"]}), "eval.prompts: unknown digits prompt 'a cat'"),
    ("bad scheduler", with_(scheduler={"type": "hyperband", "reduction_factor": 1}), "scheduler.type: 'hyperband' is unknown; allowed: asha, moasha, fifo"),
    ("backbone param without its section", with_(parameters__backbone={"values": ["digits-eps"]}), "parameters.backbone: 'digits-eps' has no entry under backbones"),
    ("negative resources", with_(backbones={"digits-flow": {"resources": {"cpu": -1}}}), "backbones.digits-flow.resources.cpu: -1 must be a number >= 0"),
    ("objective weight", with_(objective={"diversity_weight": 2}), "objective.diversity_weight: 2.0 must be in [0, 1]"),
    ("min updates", with_(objective={"min_student_updates": -1}), "objective.min_student_updates: -1 must be >= 0"),
    ("unknown backbone option", with_(backbones={"digits-flow": {"options": {"path": "/x"}}}), "backbones.digits-flow.options.path: unknown key"),
    ("not a mapping", "- just\n- a list\n", "expected a mapping at the top level"),
    ("not YAML", "name: [unclosed\n", "not valid YAML"),
]


@pytest.mark.parametrize("label, data, needle", BAD, ids=[b[0] for b in BAD])
def test_bad_space_is_refused_with_file_key_and_allowed(tmp_path, label, data, needle):
    path = write(tmp_path, data)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    text = str(err.value)
    assert str(path) in text and needle in text, text


def test_all_problems_reported_at_once(tmp_path):
    data = with_(method="bayes", methd=1, scheduler={"type": "x"}, objective={"diversity_weight": 3})
    with pytest.raises(SpaceError) as err:
        load_space(write(tmp_path, data))
    assert len(err.value.problems) >= 4


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(SpaceError, match="cannot read the file"):
        load_space(tmp_path / "nope.yaml")


def test_cli_exits_2_and_starts_nothing(tmp_path):
    path = write(tmp_path, with_(parameters__anchor_k={"values": [40]}))
    storage = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "tune.search", "--space", str(path), "--storage", str(storage)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "anchor_k" in proc.stderr and str(path) in proc.stderr
    assert not storage.exists()


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path):
    storage = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "tune.search", "--space", str(ROOT / "search_spaces/quickstart.yaml"),
                           "--storage", str(storage), "--dry-run"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "trials: 6 (4 grid points + 2 vanilla-DMD baseline(s))" in proc.stdout
    assert "anchor cache (digits-flow): K in [20]" in proc.stdout
    assert ("fronts: one per backbone, over each trial's kept student (its best by J from 40 student updates on, "
            "quality_score >= 0.9)") in proc.stdout
    assert "cost (estimates" in proc.stdout and "storage per trial run to max_t" in proc.stdout
    assert not storage.exists()


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """The folder layout the shipped real-backbone spaces expect, with tiny random-weight models."""
    from tests.dpdmd.tiny_encoders import save_tiny_clip, save_tiny_dinov2, save_tiny_pickscore
    from tests.dpdmd.tiny_pipelines import make_tiny_sd3, make_tiny_sdxl

    root = tmp_path_factory.mktemp("weights")
    make_tiny_sd3(root / "stable-diffusion-3.5-medium")
    make_tiny_sdxl(root / "stable-diffusion-xl-base-1.0")
    save_tiny_dinov2(root / "dinov2-base")
    save_tiny_clip(root / "clip-vit-large-patch14")
    pick = save_tiny_pickscore(root / "pick")
    (root / "pick" / Path(pick["processor"]).name).rename(root / "CLIP-ViT-H-14-laion2B-s32B-b79K")
    (root / "pick" / Path(pick["model"]).name).rename(root / "PickScore_v1")
    return root


@pytest.mark.parametrize("name", ["anchor.yaml", "backbone.yaml"])
def test_real_spaces_without_weights_say_which_paths_to_set(name, monkeypatch, tmp_path):
    monkeypatch.setenv("DPDMD_WEIGHTS", str(tmp_path / "nothing-here"))
    with pytest.raises(SpaceError) as err:
        load_space(ROOT / "search_spaces" / name)
    text = str(err.value)
    assert "options.path" in text and "quickstart.yaml" in text
    assert "eval.evaluator_options.quality_models.pickscore" in text


@pytest.mark.parametrize("name", ["anchor.yaml", "backbone.yaml"])
def test_real_spaces_load_when_the_weights_are_there(name, monkeypatch, weights_dir):
    monkeypatch.setenv("DPDMD_WEIGHTS", str(weights_dir))
    space = load_space(ROOT / "search_spaces" / name)
    assert set(space.backbone_names()) <= {"sd35m", "sdxl"}
    if name == "anchor.yaml":
        assert space.anchor_ks() == [5, 10, 15, 20, 25]
        config = space.train_config({"anchor_k": 10, "lambda_div": 0.05})
        assert config.teacher_steps == 30 and config.cfg_scale == 3.5 and config.student_steps == 4
        assert config.backbone_options["resolution"] == 1024


def test_every_shipped_space_is_covered():
    assert {p.name for p in SHIPPED} == {"quickstart.yaml", "anchor.yaml", "backbone.yaml"}


def test_workers_must_be_a_positive_integer(tmp_path):
    data = with_(backbones={"digits-flow": {"resources": {"cpu": 1, "workers": 0}}})
    with pytest.raises(SpaceError, match="backbones.digits-flow.resources.workers: 0 must be an integer >= 1"):
        load_space(write(tmp_path, data))
    assert load_space(write(tmp_path, with_(backbones={"digits-flow": {"resources": {"workers": 2}}}),
                            "ok.yaml")).backbones["digits-flow"].resources["workers"] == 2
