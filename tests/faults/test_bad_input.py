"""Bad input at the edge (issue 13, section 3): every problem refused before anything starts,
naming the file, the key and what is allowed; exit status 2, no traceback."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest
import yaml

from dpdmd import ConfigError, TrainConfig
from dpdmd.config import load_config, load_yaml
from tune.cli import search
from tune.storage import preflight
from tune.space import SpaceError, checks, load_space

SPACE = {
    "name": "edge",
    "method": "grid",
    "max_concurrent": 1,
    "backbones": {"digits-flow": {"resources": {"cpu": 1}}},
    "parameters": {"anchor_k": {"values": [2]}, "lambda_div": {"values": [0.05]}},
    "train": {"iterations": 12, "batch_size": 2, "teacher_steps": 10},
    "eval": {"prompts": ["3"], "seeds_per_prompt": 4, "every": 1},
    "wandb": {"enabled": False},
}


def write_space(tmp_path, **changes):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, **changes}))
    return path


# --- YAML -------------------------------------------------------------------------------------

def test_duplicate_keys_are_refused_with_file_key_and_lines(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("anchor_k: 5\nlambda_div: 0.1\neval:\n  every: 2\n  every: 3\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(path)
    message = str(err.value)
    assert str(path) in message and "duplicate key 'every'" in message and "line 5" in message \
        and "first at line 4" in message
    # merge keys may repeat what they merge
    path.write_text("base: &b {every: 2}\neval: {<<: *b, every: 3}\n")
    assert load_yaml(path)["eval"] == {"every": 3}


def test_alias_bomb_is_refused_quickly_with_bounded_memory(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(levels) + "\n")  # 9**9 = 387 million strings once expanded
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than"):
        load_yaml(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20, peak  # the small composed graph only
    assert time.perf_counter() - started < 10  # generous for a loaded machine; it takes milliseconds


def test_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "cycle.yaml"
    path.write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_yaml(path)


def test_huge_and_non_utf8_files_are_refused(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "w") as f:
        f.write("# " + "x" * (8 << 20) + "\n")
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        load_yaml(big)
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("prompts: ['caf\xe9']\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text: byte 0xe9 at offset 14") as err:
        load_yaml(latin)
    assert str(latin) in str(err.value)


def test_deep_nesting_is_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested deeper than"):
        load_yaml(path)


def test_space_file_duplicate_key_is_a_space_error(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE) + "name: other\n")
    with pytest.raises(SpaceError, match="duplicate key 'name'"):
        load_space(path)


# --- values -----------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["lambda_div", "grad_clip", "lr", "cfg_scale", "beta1"])
def test_infinities_and_nan_are_refused_for_float_settings(tmp_path, key):
    path = tmp_path / "run.yaml"
    for text in (".inf", "-.inf", ".nan"):
        path.write_text(f"{key}: {text}\n")
        with pytest.raises(ConfigError, match=rf"{key}: .* is not allowed; give a finite number"):
            load_config(path)


def test_infinity_in_a_searched_value_is_refused(tmp_path):
    path = write_space(tmp_path, parameters={"lambda_div": {"values": [0.05, float("inf")]}})
    with pytest.raises(SpaceError, match=r"parameters\.lambda_div .*give a finite number"):
        load_space(path)


def test_unset_variable_in_paths_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("DPDMD_NOT_SET", raising=False)
    path = write_space(tmp_path, eval={**SPACE["eval"], "evaluator": "real", "evaluator_options": {
        "diversity_encoders": {"dinov2": "${DPDMD_NOT_SET}/dinov2"},
        "quality_models": {"pickscore": "$DPDMD_NOT_SET/pickscore"}}})
    with pytest.raises(SpaceError) as err:
        load_space(path)
    text = str(err.value)
    assert "eval.evaluator_options.diversity_encoders.dinov2: " in text and "${DPDMD_NOT_SET}" in text
    assert "not set in the environment" in text
    from dpdmd.backbones.registry_real import check_weights_dir

    with pytest.raises(FileNotFoundError, match=r"uses \$\{DPDMD_NOT_SET\}, which is not set"):
        check_weights_dir("${DPDMD_NOT_SET}/sd35m", "sd35m")


def test_huge_evaluation_and_sample_counts_are_bounded(tmp_path):
    config = TrainConfig()
    config.eval.seeds_per_prompt = 10**9
    assert any(p.startswith("eval.seeds_per_prompt: 1000000000 is not allowed") and "at most 1024" in p
               for p in config.problems())
    with pytest.raises(SpaceError, match=r"num_samples: 1 grid point\(s\) x num_samples 1000000000000 = "
                                         r"1000000000000 trials are not allowed; a search runs at most 10000 trials"):
        load_space(write_space(tmp_path, num_samples=10**12))
    assert search.main(["--space", str(write_space(tmp_path)), "--num-samples", str(10**12), "--dry-run"]) == 2


def test_seeds_per_prompt_below_what_the_evaluator_needs(tmp_path):
    path = write_space(tmp_path, eval={**SPACE["eval"], "seeds_per_prompt": 2})
    with pytest.raises(SpaceError, match=r"eval\.seeds_per_prompt: 2 is not allowed; the digits evaluator's "
                                         r"k-NN recall \(k = 3\) needs more than 3"):
        load_space(path)


# --- names, storage, address, resources -----------------------------------------------------------

@pytest.mark.parametrize("name", ["../outside", "a/b", "..", "/abs", ""])
def test_names_that_leave_the_storage_are_refused(tmp_path, name, capsys):
    with pytest.raises(SpaceError, match=r"name: .* is not allowed; an experiment name is one folder name"):
        load_space(write_space(tmp_path, name=name))
    assert search.main(["--space", str(write_space(tmp_path)), "--name", name, "--storage",
                        str(tmp_path / "runs")]) == 2
    assert "--name: " in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "outside").exists()


def test_storage_that_is_a_file_or_read_only_is_refused_before_ray(tmp_path, capsys, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert search.main(["--space", str(write_space(tmp_path)), "--storage", str(a_file)]) == 2
    assert f"--storage: {a_file} is a file" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        problems = preflight.storage_problems(str(locked / "runs"))
        if problems:  # (root can write anywhere)
            assert problems[0].startswith(f"--storage: cannot write in {locked / 'runs'}")
    finally:
        locked.chmod(0o700)


def test_address_where_nothing_listens_fails_quickly(tmp_path, capsys, monkeypatch):
    import socket

    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    assert search.main(["--space", str(write_space(tmp_path)), "--address", f"127.0.0.1:{port}",
                        "--storage", str(tmp_path / "runs")]) == 2
    assert time.perf_counter() - started < 30
    assert f"--address: nothing answers at 127.0.0.1:{port}" in capsys.readouterr().err
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(preflight.tempfile, "gettempdir", lambda: str(tmp_path))
    assert "found no running Ray cluster" in preflight.address_problems("auto")[0]


def test_a_gpu_trial_on_a_machine_without_gpu_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(preflight, "local_nodes", lambda: [{"CPU": 2.0, "GPU": 0.0}])
    path = write_space(tmp_path, backbones={"digits-flow": {"resources": {"cpu": 1, "gpu": 1}}})
    assert search.main(["--space", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "backbones.digits-flow.resources: a trial needs 1 x {cpu: 1, gpu: 1} but this machine has 1 node(s), " \
           "2 CPU and 0 GPU" in err
    # a cluster: the same check on its nodes, waiting a bounded time for an autoscaler
    nodes = [{"CPU": 8.0}, {"CPU": 8.0}]
    said = []
    problems = preflight.wait_for_resources({"sd35m": {"cpu": 4, "gpu": 1}}, wait_s=0.2, poll_s=0.05,
                                            nodes=lambda: nodes, say=said.append)
    assert problems and "2 node(s), 16 CPU and 0 GPU" in problems[0]
    assert said and "1 x {cpu: 4, gpu: 1}" in said[0]
    assert preflight.resource_problems({"sd35m": {"cpu": 4, "gpu": 1, "workers": 2}},
                                       [{"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1}], "the cluster") == []
    assert preflight.resource_problems({"sd35m": {"cpu": 4, "gpu": 1, "workers": 3}},
                                       [{"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1}], "the cluster")


# --- evaluator weights ---------------------------------------------------------------------------

def test_transformers5_processor_config_is_accepted(tmp_path):
    from dpdmd.evaluation.real_options import _image_processor_dict

    folder = tmp_path / "proc"
    folder.mkdir()
    processor = {"image_processor_type": "BitImageProcessor", "size": {"shortest_edge": 224}}
    (folder / "processor_config.json").write_text(json.dumps({"image_processor": processor}))
    assert _image_processor_dict(str(folder))[0]["image_processor_type"] == "BitImageProcessor"
    from transformers import AutoImageProcessor  # what the evaluator will load: it agrees

    assert type(AutoImageProcessor.from_pretrained(str(folder))).__name__.startswith("BitImageProcessor")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _image_processor_dict(str(empty))[0] is None


def test_train_cli_checks_evaluator_weights_before_training(tmp_path, monkeypatch):
    import importlib

    import dpdmd.training.loop as loop

    train_cli = importlib.import_module("dpdmd.cli.train")

    monkeypatch.setattr(loop, "build_method", lambda *a, **k: pytest.fail("training started"))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"eval": {"evaluator": "real", "evaluator_options": {
        "diversity_encoders": {"dinov2": str(tmp_path / "nowhere")},
        "quality_models": {"pickscore": str(tmp_path / "nowhere2")}}}}))
    out = tmp_path / "out"
    assert train_cli.main(["--config", str(config), "--out", str(out), "--device", "cpu"]) == 2
    assert not out.exists()


# --- the teacher's reference: every trial is scored in its units ----------------------------------

def test_a_teacher_scoring_zero_is_refused_before_ray(tmp_path, capsys, monkeypatch):
    import ray

    from tune.space import load_space

    space = load_space(write_space(tmp_path, parameters={"anchor_k": {"values": [2, 3]},
                                                         "lambda_div": {"values": [0.05]}}))
    asked = []

    def teacher(scores):
        return lambda config: asked.append(config) or scores

    # the two K values share one teacher reference: computed once
    assert checks.teacher_problems(space, reference=teacher({"diversity": 0.03, "quality": 0.75})) == []
    assert len(asked) == 1 and asked[0].eval.seeds_per_prompt == 4
    (problem,) = checks.teacher_problems(space, reference=teacher({"diversity": 0.03, "quality": 0.0}))
    assert problem.startswith("eval.seeds_per_prompt: 4 is too few here: the teacher (digits-flow, teacher_steps 10) "
                              "scores quality 0 on the evaluation set")
    assert "quality is fidelity" in problem and "eval.quality_metric: class_prob" in problem
    # at launch: exit 2 naming the file and the key, before Ray starts or anything is written
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    monkeypatch.setattr(checks, "_teacher_scores", lambda config: {"diversity": 0.0, "quality": 0.5})
    storage = tmp_path / "runs"
    assert search.main(["--space", str(space.path), "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    assert str(space.path) in err and "eval.seeds_per_prompt: 4 is too few" in err and "diversity 0" in err
    assert not (storage / "edge").exists()


def test_the_teacher_check_reads_the_real_teacher_reference(tmp_path):
    from tune.space import load_space

    space = load_space(write_space(tmp_path))
    scores = checks._teacher_scores(space.train_config(space.base_point()).replace(device="cpu"))
    assert scores.keys() >= {"quality", "diversity"} and all(v >= 0 for v in scores.values())
    # the launch check refuses exactly when the real reference scores 0 (this tiny space's teacher,
    # 4 seeds per prompt, scored fidelity 0 in a fresh clone and above 0 on another machine's cache)
    positive = scores["quality"] > 0 and scores["diversity"] > 0
    assert (checks.teacher_problems(space) == []) == positive


# --- issue 24: prompts the evaluator cannot score, --storage, grace_period, the size of a search ----

def test_a_prompt_the_evaluator_cannot_score_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    import importlib

    import ray

    from dpdmd.evaluation import evaluators
    from dpdmd.evaluation.digits import DigitsEvaluator
    from dpdmd.evaluation.real import RealEvaluator

    # each evaluator says what it can score
    assert DigitsEvaluator.prompt_problem("zero") is None and DigitsEvaluator.prompt_problem("digit 7") is None
    assert "unconditional prompt ''" in DigitsEvaluator.prompt_problem("")
    assert "unknown digits prompt 'a cat'" in DigitsEvaluator.prompt_problem("a cat")
    assert RealEvaluator.prompt_problem("a dog") is None and "non-empty prompt" in RealEvaluator.prompt_problem(" ")
    from dpdmd import EvalConfig

    problems = evaluators.evaluator_problems(EvalConfig(prompts=["a dog", ""], evaluator="real"), "real")
    assert problems[0].startswith("eval.prompts[1]: '' is not allowed; the real evaluator cannot score an empty prompt")
    # the search: at load time and in the dry run, naming the file, the key and what is allowed
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    path = write_space(tmp_path, eval={**SPACE["eval"], "prompts": ["zero", ""]})
    with pytest.raises(SpaceError) as err:
        load_space(path)
    text = str(err.value)
    assert str(path) in text and "eval.prompts[1]: '' is not allowed" in text and "allowed: a digit prompt" in text
    storage = tmp_path / "runs"
    for flags in (["--dry-run"], ["--storage", str(storage)]):
        assert search.main(["--space", str(path), *flags]) == 2
        said = capsys.readouterr()
        assert "eval.prompts[1]: '' is not allowed" in said.err and "Traceback" not in said.err and not said.out
    assert not storage.exists()
    # dpdmd.train: exit 2 naming the flag, before --out is written (it wrote config.json, then failed)
    train_cli = importlib.import_module("dpdmd.cli.train")
    out = tmp_path / "out"
    assert train_cli.main(["--eval-prompts", "zero", "", "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "command line: eval.prompts[1]: '' is not allowed" in err and "(flag --eval-prompts)" in err
    assert "allowed: a digit prompt" in err and "Traceback" not in err
    assert not out.exists()


def test_storage_with_an_unset_variable_or_empty_is_refused(tmp_path, capsys, monkeypatch):
    import ray

    from tune.storage.uri import storage_uri

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    monkeypatch.delenv("DPDMD_NOT_SET", raising=False)
    monkeypatch.chdir(tmp_path)
    path = write_space(tmp_path)
    for flags in (["--dry-run"], []):
        assert search.main(["--space", str(path), "--storage", "runs/${DPDMD_NOT_SET}/y", *flags]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and "--storage: 'runs/${DPDMD_NOT_SET}/y' uses ${DPDMD_NOT_SET}, which is not set" in err
        assert "export DPDMD_NOT_SET=" in err
        assert search.main(["--space", str(path), "--storage", "", *flags]) == 2
        err = capsys.readouterr().err
        assert "--storage: '' is not allowed; give a folder" in err and "default ./runs" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]  # no folder named ${...}, nothing in .
    # a variable that is set is expanded, as in a space file's paths
    monkeypatch.setenv("DPDMD_RUNS", str(tmp_path / "elsewhere"))
    assert storage_uri("${DPDMD_RUNS}/y") == str(tmp_path / "elsewhere" / "y")


def test_a_grace_period_beyond_the_trials_length_warns(tmp_path, capsys):
    path = write_space(tmp_path, scheduler={"type": "asha", "grace_period": 50})  # 12 iterations: 2 updates
    (warning,) = load_space(path).warnings()
    assert warning.startswith("scheduler.grace_period: 50 is above the trials' length (2 student updates): "
                              "no rung will be reached") and "of at most 2" in warning
    assert search.main(["--space", str(path), "--dry-run"]) == 0
    said = capsys.readouterr()
    assert f"warning: {path}: scheduler.grace_period: 50" in said.err and "trials: " in said.out
    assert load_space(write_space(tmp_path, scheduler={"type": "fifo", "grace_period": 50})).warnings() == []
    assert load_space(write_space(tmp_path, scheduler={"type": "asha", "grace_period": 2})).warnings() == []


def test_one_cap_on_a_grid_and_on_num_samples_before_any_plan(tmp_path, capsys, monkeypatch):
    from tune.space import trials

    monkeypatch.setattr(trials, "grid_trials", lambda space: pytest.fail("the plan was built"))
    values = [0.001 * i for i in range(1, 1001)]  # 1000 x 1000 = a million grid points
    path = write_space(tmp_path, parameters={"anchor_k": {"values": [2]}, "lambda_div": {"values": values},
                                             "lr": {"values": values}})
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(SpaceError) as err:
        load_space(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - started < 30 and peak < 200 * 2**20
    assert str(path) in str(err.value) and "parameters: 1000000 grid point(s) x num_samples 1 = 1000000 trials are " \
        "not allowed; a search runs at most 10000 trials" in str(err.value)
    sampler = write_space(tmp_path, method="random", num_samples=10_001,
                          parameters={"lambda_div": {"distribution": "uniform", "min": 0.0, "max": 1.0}})
    with pytest.raises(SpaceError, match=r"num_samples: num_samples 10001 trials are not allowed; a search runs at "
                                         r"most 10000 trials"):
        load_space(sampler)
    # the flag is held to the same rule: 100 points x 101 repeats
    grid = write_space(tmp_path, parameters={"anchor_k": {"values": [2]}, "lambda_div": {"values": values[:100]}})
    storage = tmp_path / "runs"
    assert search.main(["--space", str(grid), "--num-samples", "101", "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    assert "--num-samples: 100 grid point(s) x num_samples 101 = 10100 trials are not allowed" in err
    assert not storage.exists()
