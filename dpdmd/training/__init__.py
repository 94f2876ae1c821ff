"""One training run, from config to metrics (`dpdmd.train`).

- `loop`: `train()`: the run's state, the iteration loop, evaluation, divergence, the end;
- `build`: the device, the backbone, the `DPDMD` networks, the checks made before anything runs;
- `checkpoints`: ``checkpoint/state.pt`` written atomically, read back, resumed from;
- `run_files`: the output folder: config.json, metrics.csv, the sample grids, the teacher's reference;
- `checkpoint_bytes`: the bytes of the state and of the saved student, from parameter counts.
"""
