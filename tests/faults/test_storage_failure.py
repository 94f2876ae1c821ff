"""Which errors out of `Tuner.fit` are the storage's fault: a full local disk is recognised from
the least free space seen during the search, since the space free when the error surfaces can be
larger again (half-written checkpoints are removed)."""

import time

from tune.run.storage_faults import FULL_DISK_BYTES, LeastFreeSpace, storage_failure


def test_a_disk_full_during_the_search_is_recognised_after_space_came_back(tmp_path):
    storage = str(tmp_path)  # plenty free now
    assert storage_failure(storage, EOFError("Ran out of input")) is None
    why = storage_failure(storage, EOFError("Ran out of input"), least_free=FULL_DISK_BYTES - 1)
    assert why is not None and why.startswith("its disk is full")
    # an error that is not an I/O one is not blamed on the disk, however full it was
    assert storage_failure(storage, KeyError("x"), least_free=0) is None


def test_least_free_space_samples_the_storage_while_it_runs(tmp_path):
    with LeastFreeSpace(str(tmp_path), every=0.01) as watch:
        time.sleep(0.2)
    assert watch.least is not None and watch.least > 0
    with LeastFreeSpace("s3://bucket/x", every=0.01) as remote:  # nothing to sample on a remote store
        time.sleep(0.05)
    assert remote.least is None
