"""Read an offline W&B run's transaction log (``run-<id>.wandb``) as its protobuf records.

wandb 0.31 writes it in LevelDB's log format (the Go core's ``leveldb`` package): a 7-byte file
header (``:W&B``, magic, version), then 32 KiB blocks of chunks, each with a 7-byte header
(CRC-32C, little-endian length, type: 1 full, 2 first, 3 middle, 4 last); a block's tail of
fewer than 7 bytes is padding. Each whole record is a ``wandb_internal_pb2.Record``. (wandb
0.31 no longer ships its Python reader.)
"""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def records(run_dir: str | Path) -> list:
    """Every record of the offline run in ``run_dir`` (``.../offline-run-<time>-<id>``), in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    (log,) = Path(run_dir).glob("run-*.wandb")
    data = log.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{log} is not a W&B transaction log (header {data[:7]!r})")
    out, pos, pending = [], HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # padding at a block's end
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:  # zeros: the rest of the block is unused
            pos += left
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def by_type(run_dir: str | Path) -> dict[str, list]:
    """``{record type: [records]}`` ("run", "artifact", "history", "summary", "config", ...)."""
    out: dict[str, list] = {}
    for record in records(run_dir):
        out.setdefault(record.WhichOneof("record_type"), []).append(record)
    return out
