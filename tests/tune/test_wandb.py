"""tune.outputs.wandb: offline with no API key, never raising when W&B breaks.

What wandb 0.31 writes offline (checked here): ``<dir>/wandb/offline-run-<time>-<id>/``
holding ``run-<id>.wandb`` (the binary transaction log: history, summary, the scatter's
Vega spec, table *references*) and ``files/media/table/<key>_<step>_<hash>.table.json`` (the
table data as ``{"columns": [...], "data": [[...], ...]}``); images go to
``files/media/images/<key>_<step>_<hash>.png``.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import pandas as pd
import pytest

wandb = pytest.importorskip("wandb")

from tune.outputs import wandb as wandb_summary  # noqa: E402
from tune.outputs.wandb import log_summary_run  # noqa: E402


@pytest.fixture
def no_wandb_credentials(tmp_path, monkeypatch):
    """No key anywhere: no env vars, HOME and NETRC point at empty temp locations."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))  # does not exist
    for var, sub in (("WANDB_DIR", "wandb_dir"), ("WANDB_CONFIG_DIR", "config"),
                     ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"),
                     ("WANDB_ARTIFACT_DIR", "artifacts")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


@pytest.fixture
def front_df():
    return pd.DataFrame({
        "diversity": [0.02, 0.05, 0.07],
        "quality": [0.95, 0.90, 0.85],
        "anchor_k": [5, 10, 20],
        "lambda_div": [0.01, 0.05, 0.1],
        "backbone": ["digits-flow", "digits-flow", "digits-unet"],
    }, index=[7, 3, 11])  # a filtered frame keeps its original index


def _png(path):
    from tune.outputs.plots import plot_pareto

    return plot_pareto(pd.DataFrame({"diversity": [0.1, 0.2], "quality": [0.2, 0.1]}), path)


def test_offline_run_without_api_key(no_wandb_credentials, front_df):
    tmp = no_wandb_credentials
    assert not wandb_summary._has_api_key()
    png = _png(tmp / "front.png")
    with pytest.warns(RuntimeWarning, match="'gone' not found"):  # skipped, run still made
        run_dir = log_summary_run(
            project="dpdmd-tune-test", name="summary", front_df=front_df,
            trials_df=pd.concat([front_df, front_df.assign(quality=0.5)]),
            png_paths={"pareto": png, "gone": tmp / "missing.png"},
            summary={"hypervolume": 0.0123456, "n_trials": 6},
            mode=None, directory=tmp / "runs",
        )
    assert run_dir is not None
    assert "WANDB_MODE" not in os.environ  # set only for the call
    run_path = tmp / "runs" / "wandb" / os.path.basename(run_dir)
    assert os.path.samefile(run_dir, run_path)
    assert run_path.name.startswith("offline-run-")

    # The transaction log `wandb sync` uploads: holds keys, summary and the scatter spec. W&B's
    # service writes it in the background; shutting the service down flushes it, as the end of
    # the search's process does (read right after finish(), the summary was missing once in CI-like runs).
    import wandb
    wandb.teardown()
    (log,) = run_path.glob("run-*.wandb")
    blob = log.read_bytes()
    assert len(blob) > 1000
    for needle in (b"pareto/front", b"pareto/front_scatter", b"wandb/scatter/v0",
                   b"hypervolume", b"0.0123456", b"n_trials", b"plots/pareto"):
        assert needle in blob, needle

    # The front table's data lives in files/media/table/pareto/front_<step>_<hash>.table.json.
    (table_file,) = (run_path / "files" / "media" / "table" / "pareto").glob("front_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == list(front_df.columns)
    assert table["data"] == front_df.values.tolist()
    assert list((run_path / "files" / "media" / "table" / "trials").glob("table_*.table.json"))
    assert list((run_path / "files" / "media" / "images" / "plots").glob("pareto_*.png"))


def test_api_key_detection(no_wandb_credentials, monkeypatch):
    netrc_path = no_wandb_credentials / "home" / ".netrc"
    netrc_path.write_text("machine example.com login user password abc\n")
    netrc_path.chmod(0o600)
    assert not wandb_summary._has_api_key()
    netrc_path.write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    assert wandb_summary._has_api_key()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.internal.example")
    assert not wandb_summary._has_api_key()  # the key is for another host
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_summary._has_api_key()


def test_online_without_key_falls_back_to_offline(no_wandb_credentials):
    assert wandb_summary._resolve_mode("online") == "offline"
    assert wandb_summary._resolve_mode("disabled") == "disabled"


def test_broken_wandb_init_returns_none(no_wandb_credentials, front_df, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("wandb service crashed")

    monkeypatch.setattr(wandb, "init", boom)
    with pytest.warns(RuntimeWarning, match="wandb service crashed"):
        out = log_summary_run(project="p", name="n", front_df=front_df, trials_df=None,
                              png_paths={}, summary={}, mode=None,
                              directory=no_wandb_credentials / "runs")
    assert out is None
    assert "WANDB_MODE" not in os.environ


def test_failure_after_init_finishes_the_run(no_wandb_credentials, front_df, monkeypatch):
    def bad_scatter(*args, **kwargs):
        raise KeyError("no such column")

    monkeypatch.setattr(wandb.plot, "scatter", bad_scatter)
    with pytest.warns(RuntimeWarning, match="not logged"):
        out = log_summary_run(project="p", name="n", front_df=front_df, trials_df=None,
                              png_paths={}, summary={}, mode="offline",
                              directory=no_wandb_credentials / "runs")
    assert out is None
    assert wandb.run is None  # the half-made run was finished, not left open


def test_wandb_not_installed_returns_none(no_wandb_credentials, front_df, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise
    with pytest.warns(RuntimeWarning, match="not logged .ModuleNotFoundError"):
        assert log_summary_run(project="p", name="n", front_df=front_df, trials_df=None,
                               png_paths={}, summary={}, mode=None, directory=None) is None


def test_disabled_mode_writes_nothing(no_wandb_credentials, front_df):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = log_summary_run(project="p", name="n", front_df=front_df, trials_df=None,
                              png_paths={}, summary={"x": 1}, mode="disabled",
                              directory=no_wandb_credentials / "runs")
    assert out is None
    assert not list((no_wandb_credentials / "runs").rglob("*.wandb"))


def test_bad_mode_is_a_caller_error(front_df):
    with pytest.raises(ValueError, match="mode must be one of"):
        log_summary_run(project="p", name="n", front_df=front_df, trials_df=None,
                        png_paths={}, summary={}, mode="offlne", directory=None)


def _checkpoint(root, trial):
    """A kept checkpoint as the search stores it: its student folder with a manifest and weights."""
    student = root / "runs" / "exp" / trial / "checkpoint_000002" / "student"
    student.mkdir(parents=True)
    (student / "dpdmd_student.json").write_text('{"dpdmd_student": 1}')
    (student / "diffusion_pytorch_model.safetensors").write_bytes(b"w" * 4096)
    return str(student.parent)


@pytest.mark.parametrize("upload", [False, True])
def test_the_summary_run_holds_what_its_users_look_for(no_wandb_credentials, upload):
    """Group, config (the space and each trial's resolved configuration), every report as a table
    and a line plot by configuration, the front's students as model artifacts: references to the
    storage by default, the files themselves when asked."""
    from pathlib import Path

    import numpy as np

    from tests.tune.wandb_log import by_type
    from tune.outputs.wandb_content import run_config
    from tune.space import load_space

    tmp = no_wandb_credentials
    space = load_space(Path(__file__).parents[2] / "search_spaces" / "quickstart.yaml")
    reports = pd.DataFrame({"trial_id": ["a"] * 3 + ["b"] * 2, "backbone": ["digits-flow"] * 5,
                            "anchor_k": [20] * 5, "lambda_div": [0.05] * 3 + [0.5] * 2, "baseline": [False] * 5,
                            "student_updates": [20, 40, 60, 20, 40], "diversity": np.linspace(0.01, 0.05, 5),
                            "quality": np.linspace(0.4, 0.6, 5), "objective": [0.5, 0.8, 0.7, -np.inf, 0.9]})
    kept = reports.iloc[[1, 4]].assign(kept=True, checkpoint=[_checkpoint(tmp, "a"), _checkpoint(tmp, "b")])
    records = [dict(r, diversity_score=0.9, quality_score=1.0) for r in kept.to_dict("records")]
    run_dir = log_summary_run(
        project="p", name="quickstart-summary", group="quickstart", front_df=kept, trials_df=kept,
        reports_df=reports, students=records, recommended={"digits-flow": records[1]},
        config=run_config(space, kept, experiment=str(tmp / "runs" / "exp")), upload_students=upload,
        summary={"hypervolume/digits-flow": 0.5}, mode=None, directory=tmp / "out")
    assert run_dir is not None
    wandb.teardown()  # flushes the transaction log
    log = by_type(run_dir)
    (run,) = log["run"]
    assert run.run.run_group == "quickstart" and run.run.job_type == "tune-summary"
    config = {item.key: json.loads(item.value_json) for item in run.run.config.update}
    assert config["space"]["name"] == "quickstart" and config["space"]["parameters"]["anchor_k"] == {"values": [20]}
    assert config["trials"]["b"]["label"] == "digits-flow K=20 λ=0.5"
    assert config["trials"]["b"]["lambda_div"] == 0.5 and config["trials"]["b"]["iterations"] == 600  # resolved
    (table_file,) = (Path(run_dir) / "files" / "media" / "table" / "reports").glob("table_*.table.json")
    table = json.loads(table_file.read_text())
    assert {"trial_id", "label", "student_updates", "objective", "kept_student"} <= set(table["columns"])
    assert len(table["data"]) == 5
    column = table["columns"].index("kept_student")
    assert [row[column] for row in table["data"]] == [False, True, False, False, True]
    history = {item.nested_key[0] if item.nested_key else item.key for r in log["history"] for item in r.history.item}
    assert {"reports/table", "reports/J_table"} <= history
    charts = {tuple(item.nested_key): json.loads(item.value_json) for r in log["config"] for item in r.config.update}
    line = charts[("_wandb", "visualize", "reports/J")]["panel_config"]
    assert line["panelDefId"] == "wandb/line/v0"
    assert line["fieldSettings"] == {"x": "student_updates", "y": "objective", "stroke": "label"}
    models = {a.artifact.name: a.artifact for a in log["artifact"] if a.artifact.type == "model"}
    assert set(models) == {"quickstart-digits-flow-a", "quickstart-digits-flow-b"}
    assert "recommended" in models["quickstart-digits-flow-b"].aliases and "front" in models["quickstart-digits-flow-a"].aliases
    assert "recommended" not in models["quickstart-digits-flow-a"].aliases
    entries = {e.path: e for e in models["quickstart-digits-flow-b"].manifest.contents}
    assert set(entries) == {"student/dpdmd_student.json", "student/diffusion_pytorch_model.safetensors"}
    weights = entries["student/diffusion_pytorch_model.safetensors"]
    if upload:
        assert weights.ref == "" and weights.size == 4096  # the file itself goes with the run
    else:
        assert weights.ref == Path(kept["checkpoint"].iloc[1], "student", "diffusion_pytorch_model.safetensors").as_uri()
    metadata = json.loads(models["quickstart-digits-flow-b"].metadata)
    assert metadata["checkpoint"] == Path(kept["checkpoint"].iloc[1]).as_uri() and metadata["lambda_div"] == 0.5
