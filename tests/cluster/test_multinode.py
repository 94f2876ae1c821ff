"""A real multi-node search on one machine: a Ray head (no CPU) and two one-CPU worker nodes on
loopback, joined by ``python -m tune.search --address``. Shows that trials ran on both worker
nodes, that the anchor store ran on the head, that every teacher anchor was computed once in the
whole cluster, and that trials read anchors computed on the other node."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from .conftest import WORKER_IPS, run_search, write_space

SPACE = {
    "name": "multinode",
    "method": "grid",
    "seed": 0,
    "max_concurrent": 2,
    "baseline": False,  # every trial asks for anchors
    "backbones": {"digits-flow": {"resources": {"cpu": 1}}},
    "parameters": {"anchor_k": {"values": [2, 5]}, "lambda_div": {"values": [0.5, 1.0]}},
    "train": {"iterations": 24, "batch_size": 4, "teacher_steps": 10},  # 4 student updates
    "eval": {"prompts": ["3", "7"], "seeds_per_prompt": 4, "every": 2},
    "scheduler": {"type": "fifo"},  # every trial runs all its updates: the same anchor keys in each
    "wandb": {"enabled": False},
}
STUDENT_UPDATES = 24 // 6
LARGEST_K = 5


@pytest.fixture(scope="module")
def search(ray_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multinode")
    space = write_space(tmp / "space.yaml", SPACE)
    storage = tmp / "runs"  # one machine: a local directory is storage every node shares
    run_search("--space", str(space), "--storage", str(storage), "--address", ray_cluster.address,
               env=ray_cluster.env)
    # every actor the search started, alive or dead, from the GCS (the state API would need the
    # dashboard, which these nodes do not run): the anchor store and the trials' actors
    actors = ray_cluster.python("""
        from ray._private.state import actors
        print(json.dumps([{"cls": a["ActorClassName"], "node_id": a["Address"]["NodeID"], "pid": a["Pid"],
                           "state": a["State"]} for a in actors().values()]))
    """)
    exp = storage / "multinode"
    trials = pd.read_parquet(exp / "trials.parquet")
    final = trials.sort_values("student_updates").groupby("trial_id").tail(1)
    return {"cluster": ray_cluster, "storage": storage, "exp": exp, "final": final, "actors": actors,
            "summary": json.loads((exp / "summary.json").read_text())}


def test_trials_ran_on_both_worker_nodes(search):
    final, cluster = search["final"], search["cluster"]
    assert len(final) == 4 and (final["student_updates"] == STUDENT_UPDATES).all()
    assert not (final["error"].astype(bool)).any()
    node_of_ip = {n["ip"]: n["node_id"] for n in cluster.nodes}
    nodes = {node_of_ip[ip] for ip in final["node_ip"]}
    workers = {n["node_id"] for n in cluster.nodes if n["ip"] in WORKER_IPS}
    assert nodes == workers and len(nodes) == 2, final[["trial_id", "node_ip", "pid"]]


def test_trial_actors_ran_on_the_worker_nodes_and_the_store_on_the_head(search):
    actors, cluster, final = search["actors"], search["cluster"], search["final"]
    stores = [a for a in actors if a["cls"] == "AnchorStore"]
    assert len(stores) == 1, actors
    assert stores[0]["node_id"] == cluster.head["node_id"]
    assert stores[0]["state"] == "DEAD"  # killed by the driver at the end (--address: a shared cluster)
    # each trial's process (Ray's `pid` in its results) was an actor on the node its `node_ip` names
    node_of_pid = {a["pid"]: a["node_id"] for a in actors if a["cls"] != "AnchorStore"}
    node_of_ip = {n["ip"]: n["node_id"] for n in cluster.nodes}
    for row in final.itertuples():
        assert node_of_pid[row.pid] == node_of_ip[row.node_ip], (row.trial_id, row.pid, row.node_ip, actors)


def test_each_anchor_computed_once_in_the_cluster(search):
    from safetensors import safe_open

    final, cache = search["final"], search["summary"]["cache"]
    spilled = []
    for f in sorted((search["storage"] / "anchor_cache").glob("*.safetensors")):
        with safe_open(str(f), "np") as h:
            spilled.append(h.metadata()["key"])
    anchor_keys = [k for k in spilled if k.startswith("anchor/")]
    # every trial runs the same student iterations, hence asks for the same keys: one per update
    assert len(anchor_keys) == STUDENT_UPDATES
    assert (final["anchor_hits"] + final["anchor_misses"] == final["student_updates"]).all()
    assert int(final["anchor_misses"].sum()) == len(anchor_keys)  # computed once, cluster-wide
    assert cache["keys_computed_twice"] == 0
    assert cache["keys_computed"] == len(spilled) == cache["spill_writes"]  # anchors + prompt embeddings
    assert cache["teacher_calls"] == int(final["anchor_teacher_calls"].sum()) == len(anchor_keys) * LARGEST_K


def test_anchors_computed_on_one_node_are_read_on_the_other(search):
    final = search["final"]
    per_node = final.groupby("node_ip")[["anchor_hits", "anchor_misses"]].sum()
    # each node's trials asked for all STUDENT_UPDATES keys; it computed `anchor_misses` of them,
    # so it read the rest from anchors computed on the other node
    from_other_node = STUDENT_UPDATES - per_node["anchor_misses"]
    assert from_other_node.sum() == STUDENT_UPDATES, per_node  # 2 nodes, each key computed on one
    readers = from_other_node[from_other_node > 0].index
    assert len(readers) >= 1
    assert (per_node.loc[readers, "anchor_hits"] >= from_other_node[readers]).all(), per_node
