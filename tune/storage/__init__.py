"""The search's storage and what is checked before a search starts.

- `uri`: local folders and URIs (s3://, gs://) alike: naming, copying;
- `preflight`: the command line's and the cluster's checks before anything starts (names, storage,
  address, resources) and the record of the space a search was started from (``--resume``);
- `state_backup`: a last whole copy of Ray Tune's experiment state, put back by ``--resume``
  where a full or failing storage cut it short;
- `cluster_check`: the shipped cluster files (``ray up``, KubeRay) validated without a cluster.
"""
