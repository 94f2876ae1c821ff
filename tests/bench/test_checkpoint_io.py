"""`bench/checkpoint_io.py` on the CPU (`--smoke`, a tiny SD3 transformer): every format is written,
read back and sized as its contents say, and the share-of-trial arithmetic. (The real-scale numbers
are in bench/README_gpu.md, section 5.)"""

from __future__ import annotations

import json

import pytest

from tests.bench_scripts import load_bench


@pytest.fixture(scope="module")
def ckio():
    return load_bench("checkpoint_io")


def test_smoke_writes_and_reads_every_format(ckio, tmp_path):
    assert ckio.main(["--smoke", "--networks", "2", "--dir", str(tmp_path / "disk"), "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "checkpoint_io.json").read_text())
    rows = {r["what"]: r for r in doc["rows"]}
    assert set(rows) == {"student_bf16", "lora_adapter", "state_dcp", "state_torch_save", "lora_state_dcp",
                         "lora_state_torch_save"}
    assert all(r["save_s"] > 0 and r["load_s"] > 0 for r in rows.values())
    n, lora, elements = doc["parameters"], doc["lora_trainable"], doc["state_elements"]
    # bf16: 2 bytes a weight or buffer (+ the safetensors header); the state: fp32 weights and buffers +
    # 2 fp32 moments a parameter, 2 networks
    assert 2 * elements <= rows["student_bf16"]["bytes"] < 2 * elements + 64_000
    assert 2 * lora <= rows["lora_adapter"]["bytes"] < 2 * lora + 64_000
    for name in ("state_dcp", "state_torch_save"):  # (+ DCP's metadata: ~700 bytes a tensor, large at this size)
        assert 2 * (4 * elements + 8 * n) <= rows[name]["bytes"] < 2 * (4 * elements + 8 * n) + 2_500_000
    for name in ("lora_state_dcp", "lora_state_torch_save"):
        assert 2 * 12 * lora <= rows[name]["bytes"] < 2 * 12 * lora + 1_500_000
    assert not list((tmp_path / "disk").iterdir())  # each checkpoint is removed after its load
    assert doc["shares"]["state_dcp"]["extrapolated_x2"] is False


def test_share_of_a_trial(ckio):
    rows = [{"what": "student_bf16", "bytes": 4.5e9, "save_s": 10.0},
            {"what": "state_dcp", "bytes": 27e9, "save_s": 30.0},
            {"what": "lora_adapter", "bytes": 1e8, "save_s": 0.5}]
    shares = ckio.shares_of_trial(rows, nets=1, cycle_s=8.0, lora_cycle_s=5.0, report_every=50)
    assert shares["student_bf16"]["share_every_report"] == pytest.approx(10 / 400)
    state = shares["state_dcp"]  # one network measured: the trial's two take twice the bytes and seconds
    assert state["extrapolated_x2"] and state["trial_bytes"] == 54e9 and state["trial_save_s"] == 60.0
    assert state["share_every_report"] == pytest.approx(60 / 400)
    assert state["every_n_reports_for_5pct"] == 3  # 60 s / (3 x 400 s) = 5%
    assert shares["lora_adapter"]["report_interval_s"] == 250.0
