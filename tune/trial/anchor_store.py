"""The teacher-anchor cache: computed once per search, read by every trial from the object store.

Every trial with the same backbone, teacher settings, seed and prompts sees the same batch at
iteration i (`dpdmd.stream`), so the teacher's trajectory is the same in all of them. The first
trial to need iteration i's anchor runs one teacher pass up to the largest K of the space and
publishes the first-step target of *every* K; all other trials read it.

- `AnchorStore` is a named, detached Ray actor. It calls ``ray.put`` itself, so it owns the
  objects, and they outlive any trial and the driver (objects put by a driver die with it).
  Its calls run one at a time, so two trials missing the same key cannot both compute it: the
  first gets a lease ("compute"), the others "wait" and poll until it is published. A lease
  that is not published in ``lease_seconds`` (its trial was killed) passes to the next asker.
- Memory is bounded: least-recently-used objects are dropped from the object store beyond
  ``max_bytes``; every entry is also spilled as a safetensors file under the storage
  (``<storage>/anchor_cache/``, local or S3 through pyarrow's filesystems), so a dropped entry,
  a resumed search or a second search with the same storage reads it back instead of
  recomputing.
- Prompt embeddings go through the same store (key ``emb/<cache_key("embedding")>/<prompt>``,
  `dpdmd.data.cache_keys`), behind each trial's `dpdmd.data.prompt_cache.PromptEmbeddingCache`. This is not
  a second in-memory cache but a different job: it makes the text encoders run once per *search*.
  The diffusers backbones' disk cache (same `text_key`) cannot: trials starting together all miss
  it and would each load T5-XXL (~10 GB), and each node of a cluster has its own disk.

Trial side: `SharedCache.get_or_compute(key, compute)`, a `dpdmd.anchors.AnchorCache`: the
trainer's `dpdmd.anchors.CachedAnchors` reads anchors through it (`tune.trial.trainable.shared_caches`),
and `cached_prompt_lookup` prompt embeddings.
"""

from __future__ import annotations

import hashlib
import time
import uuid
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import ray
import torch

from dpdmd.anchors import stored_tensor

from ..storage.uri import filesystem, write_atomic

NAMESPACE = "dpdmd-tune"


def store_name(spill_uri: str | None) -> str:
    """One store per storage location, so two searches on one cluster share exactly when they
    share a spill directory."""
    return "dpdmd-anchor-store-" + hashlib.sha256(str(spill_uri).encode()).hexdigest()[:10]


def _spill_file(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest() + ".safetensors"


class _Store:
    """The store's logic, plain Python (tested without Ray); `AnchorStore` is its actor form."""

    def __init__(self, spill_uri: str | None = None, max_bytes: int = 1 << 30, lease_seconds: float = 900.0,
                 put: Callable = None):
        self.spill_uri = spill_uri
        self.max_bytes = max_bytes
        self.lease_seconds = lease_seconds
        self.put = put or (lambda value: value)
        self.entries: OrderedDict[str, tuple[object, int]] = OrderedDict()  # key -> (ref, nbytes)
        self.leases: dict[str, float] = {}
        self.counts: Counter = Counter()
        self.computed: Counter = Counter()  # key -> how many times it was published (should be 1)
        self.bytes = 0
        # which store counted: a recreated store (actor removed, process restarted, a resumed
        # search) starts from 0, and the search adds its counts to the earlier ones' (`StatsRecorder`)
        self.store_id = uuid.uuid4().hex[:12]
        self.fs, self.root = None, None
        if spill_uri:
            self.fs, self.root = filesystem(spill_uri)
            self.fs.create_dir(self.root, recursive=True)

    def lookup(self, key: str) -> tuple[str, list]:
        """("hit", [ref]) | ("compute", []) (the caller must publish or abandon) | ("wait", [])."""
        if key in self.entries:
            self.entries.move_to_end(key)
            self.counts["hits"] += 1
            return "hit", [self.entries[key][0]]
        try:
            arrays = self._read_spill(key)
        except OSError:  # storage lost or damaged file: compute instead (the cache is an optimisation)
            self.counts["spill_errors"] += 1
            arrays = None
        if arrays is not None:
            self._remember(key, arrays)
            self.counts["hits"] += 1
            self.counts["spill_reads"] += 1
            return "hit", [self.entries[key][0]]
        started = self.leases.get(key)
        if started is not None and time.time() - started < self.lease_seconds:
            self.counts["waits"] += 1
            return "wait", []
        if started is not None:
            self.counts["expired_leases"] += 1
        self.leases[key] = time.time()
        self.counts["misses"] += 1
        return "compute", []

    def publish(self, key: str, arrays: dict[str, np.ndarray], teacher_calls: int = 0) -> None:
        self.leases.pop(key, None)
        if key in self.entries:  # a late publisher after a lease expiry: keep the first
            return
        self.computed[key] += 1
        self.counts["teacher_calls"] += teacher_calls
        self._remember(key, arrays)
        try:
            self._write_spill(key, arrays)
        except OSError as err:  # a full or lost storage: the entry stays in memory, the trial goes on
            self.counts["spill_errors"] += 1
            if self.counts["spill_errors"] == 1:
                warnings.warn(f"anchor cache: cannot spill to {self.spill_uri} ({err}); keeping entries in "
                              "memory only (a resumed search will compute them again)", stacklevel=2)

    def abandon(self, key: str) -> None:
        """The computing trial failed: let the next asker compute."""
        self.leases.pop(key, None)

    def stats(self) -> dict:
        return {"store_id": self.store_id, **self.counts, "entries": len(self.entries), "bytes": self.bytes,
                "keys_computed": len(self.computed), "keys_computed_twice": sum(v > 1 for v in self.computed.values())}

    def computed_counts(self, prefix: str = "") -> dict[str, int]:
        return {k: v for k, v in self.computed.items() if k.startswith(prefix)}

    # --- memory and spill ---
    def _remember(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        nbytes = sum(a.nbytes for a in arrays.values())
        self.entries[key] = (self.put(arrays), nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes and len(self.entries) > 1:
            _, (_, dropped) = self.entries.popitem(last=False)  # least recently used
            self.bytes -= dropped
            self.counts["evictions"] += 1

    def _write_spill(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        if self.fs is None:
            return
        from safetensors.numpy import save

        path = f"{self.root}/{_spill_file(key)}"
        data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata={"key": key})
        write_atomic(self.fs, path, data)  # whole or not at all: a half-written file would take the space a later one needs
        self.counts["spill_writes"] += 1

    def _read_spill(self, key: str) -> dict[str, np.ndarray] | None:
        if self.fs is None:
            return None
        import pyarrow.fs as pafs
        from safetensors.numpy import load

        path = f"{self.root}/{_spill_file(key)}"
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return load(f.read())


@ray.remote(num_cpus=0, max_restarts=-1)
class AnchorStore(_Store):
    """The actor: `_Store` whose values are object refs it put itself (so it owns them)."""

    def __init__(self, spill_uri: str | None = None, max_bytes: int = 1 << 30, lease_seconds: float = 900.0):
        from .worker_exit import quiet_sigterm

        quiet_sigterm()  # ends at once when Ray stops it, without a traceback
        super().__init__(spill_uri, max_bytes, lease_seconds, put=ray.put)


def get_or_create_store(spill_uri: str | None, *, max_bytes: int = 1 << 30, lease_seconds: float = 900.0,
                        on_head: bool = True):
    """The store for this storage location: started once, detached, found again by name."""
    # "DEFAULT": never inside the placement group of the trial that (re)creates it (it outlives trials)
    options = dict(name=store_name(spill_uri), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                   scheduling_strategy="DEFAULT")
    if on_head:  # the head never scales away; it may advertise no CPU, the store needs none
        options["resources"] = {"node:__internal_head__": 0.001}
    return AnchorStore.options(**options).remote(spill_uri, max_bytes, lease_seconds)


def find_store(spill_uri: str | None):
    return ray.get_actor(store_name(spill_uri), namespace=NAMESPACE)


class SharedCache:
    """Trial side: ``get_or_compute(key, compute)`` on the store (a `dpdmd.anchors.AnchorCache`;
    the anchor provider counts its own hits and misses).

    If the store actor is gone (its process killed past its restarts, or removed with
    ``ray.kill``), the next call starts a new one for the same spill location: it refills from
    the spill files, so the trial goes on and what was computed is not computed again."""

    def __init__(self, store, spill_uri: str | None = None):
        self.store = store
        self.spill_uri = spill_uri
        self.store_restarts = 0

    def _call(self, method: str, *args):
        for attempt in range(3):
            try:
                return ray.get(getattr(self.store, method).remote(*args))
            except ray.exceptions.RayActorError:
                if attempt == 2:
                    raise
                self.store = get_or_create_store(self.spill_uri)  # found if another trial made it already
                self.store_restarts += 1

    def get_or_compute(self, key: str, compute: Callable[[], tuple[dict[str, np.ndarray], int]]) -> dict[str, np.ndarray]:
        delay = 0.005
        while True:
            status, refs = self._call("lookup", key)
            if status == "hit":
                try:
                    return ray.get(refs[0])  # numpy arrays: zero-copy, read-only views on this node
                except ray.exceptions.RayError:  # the store died with its objects: ask again
                    self.store = get_or_create_store(self.spill_uri)
                    self.store_restarts += 1
                    continue
            if status == "compute":
                try:
                    arrays, teacher_calls = compute()
                except BaseException:
                    self.store.abandon.remote(key)
                    raise
                self._call("publish", key, arrays, teacher_calls)
                return arrays
            time.sleep(delay)  # another trial is computing this key
            delay = min(2 * delay, 0.25)


def cached_prompt_lookup(cache: SharedCache, backbone, identity: str):
    """A `PromptEmbeddingCache` lookup that encodes each prompt once per search (module
    docstring: why beside the backbone's disk cache). ``identity``: the hash of
    ``cache_key("embedding", config, backbone)``."""

    def lookup(prompts: Sequence[str]) -> list[dict[str, torch.Tensor]]:
        rows = []
        for prompt in prompts:
            def compute(prompt=prompt):
                emb = backbone.encode_prompts([prompt])
                # numpy has no bfloat16 (SD backbones in bf16): widen to float32, exactly; the
                # backbone casts embeddings to its network's dtype anyway
                return {k: (v.float() if v.dtype == torch.bfloat16 else v).detach().cpu().numpy()
                        for k, v in emb.items()}, 0

            arrays = cache.get_or_compute(f"emb/{identity}/{prompt}", compute)
            rows.append({k: stored_tensor(v, backbone.device) for k, v in arrays.items()})
        return rows

    return lookup
