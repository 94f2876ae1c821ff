"""The reference's final evaluation protocol over any image generators (method.md, "Evaluation").

A protocol (``eval_protocols/<name>.yaml``, `ProtocolConfig`) names a prompts file, the seeds per
prompt and the real evaluator's options: diversity encoders (the reference: CLIP ViT-L/14 and
DINOv3 ViT-L/16, diversity = 1 - mean pairwise cosine of their embeddings), preference scores
(ImageReward, PickScore, HPSv2.1) and visual quality (VisualQuality-R1, MANIQA). `run_protocol`
scores a teacher and any number of students, each a *generator*: a callable
``(prompts, seeds) -> images (P, N, C, H, W) in [0, 1]`` drawing seeds 0..N-1 (a loaded
`dpdmd.student.Student`'s ``sample`` and ``teacher_sample`` are such callables).

1. Every path is checked (`protocol_problems`: the prompts file, every model folder or file, with
   the hub id to fetch a missing one) and the models are loaded, before any image is generated.
2. The teacher's images, in chunks of ``prompts_per_chunk`` prompts (a 1024-prompt x 16-seed grid
   of 1024 px images does not fit in memory), give the reference the students' ``teacher_precision``
   and ``spectral`` are read against, and the teacher's own row (leave-one-out).
3. Each student's chunks are scored against the teacher's; the chunks' metrics are combined
   exactly (`combine_chunks`: every metric is a mean over prompts or images).
4. The table (one row per teacher / student; `write_table`: Parquet and Markdown) and, when
   asked, a W&B run's summary (`log_to_wandb`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..config import ConfigError, unset_variables
from .real import RealEvaluator, make_real_evaluator
from .real_options import check_evaluator_paths

Generator = Callable[[list[str], int], torch.Tensor]  # (prompts, seeds) -> (P, N, C, H, W) in [0, 1]
PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "eval_protocols"


@dataclass(frozen=True, kw_only=True)
class ProtocolConfig:
    """One evaluation protocol (a YAML file of ``eval_protocols/``; unknown keys are refused).

    Attributes:
        name: the protocol's name (the table's and the W&B run's).
        prompts_file: one prompt per line (``~`` and ``$VARS`` expanded); None: the caller's
            default prompts (the CLI: the student's evaluation prompts).
        seeds_per_prompt: images per prompt, seeds 0..N-1 (the reference: 16).
        prompts_per_chunk: prompts generated and scored at once (memory, not results).
        quality_metric: the preference score of the real evaluator's ``fidelity`` (positive).
        evaluator_options: the real evaluator's options (`dpdmd.evaluation.real_options`).
    """

    name: str
    prompts_file: str | None = None
    seeds_per_prompt: int = 16
    prompts_per_chunk: int = 8
    quality_metric: str = "pickscore"
    evaluator_options: dict = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str) -> "ProtocolConfig":
        if not isinstance(data, Mapping):
            raise ConfigError([f"{source}: a protocol is a mapping with keys "
                               f"{', '.join(f.name for f in fields(cls))}, got {type(data).__name__}"])
        allowed = {f.name for f in fields(cls)}
        problems = [f"{source}: unknown key {key!r}; allowed: {', '.join(sorted(allowed))}"
                    for key in data if key not in allowed]
        for key in ("seeds_per_prompt", "prompts_per_chunk"):
            value = data.get(key, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{source}: {key} must be a positive integer, got {value!r}")
        if data.get("prompts_file") is not None and not isinstance(data["prompts_file"], str):
            problems.append(f"{source}: prompts_file must be a path or null, got {data['prompts_file']!r}")
        if problems:
            raise ConfigError(problems)
        return cls(**{"name": Path(source).stem, **dict(data)})

    def to_dict(self) -> dict:
        return asdict(self)


def load_protocol(name_or_path: str | os.PathLike) -> ProtocolConfig:
    """The protocol of a YAML file, or of ``eval_protocols/<name>.yaml`` for a bare name."""
    from ..config import load_yaml

    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = PROTOCOL_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml"))
        raise ConfigError([f"protocol {str(name_or_path)!r}: {path} does not exist; give a YAML file or one of "
                           f"{', '.join(shipped) or 'none'} ({PROTOCOL_DIR})"])
    return ProtocolConfig.from_mapping(load_yaml(path), source=str(path))


def read_prompts(path: str) -> list[str]:
    """The non-empty lines of a prompts file, stripped."""
    with open(os.path.expanduser(os.path.expandvars(path)), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def protocol_problems(protocol: ProtocolConfig) -> list[str]:
    """Everything wrong with a protocol that can be found without loading a model: the prompts
    file, and every model path (`check_evaluator_paths` with ``final=True``)."""
    problems = []
    if protocol.prompts_file is not None:
        unset = unset_variables(protocol.prompts_file)
        path = os.path.expanduser(os.path.expandvars(protocol.prompts_file))
        if unset:
            problems.append(f"prompts_file: {protocol.prompts_file} uses ${{{unset[0]}}}, which is not set; "
                            f"export {unset[0]}=...")
        elif not os.path.isfile(path):
            problems.append(f"prompts_file: {path} is not a file (one prompt per line); set prompts_file: null "
                            "to use the students' own evaluation prompts")
        elif not read_prompts(path):
            problems.append(f"prompts_file: {path} holds no prompt")
    return problems + check_evaluator_paths(protocol.evaluator_options, quality_metric=protocol.quality_metric,
                                            prefix="evaluator_options", seeds_per_prompt=protocol.seeds_per_prompt,
                                            final=True)


def make_protocol_evaluator(protocol: ProtocolConfig, *, device: torch.device | str) -> RealEvaluator:
    """The real evaluator of ``protocol`` (all its models loaded), after `protocol_problems`."""
    problems = protocol_problems(protocol)
    if problems:
        raise ConfigError(problems)
    return make_real_evaluator("real", device=device, quality_metric=protocol.quality_metric, final=True,
                               **protocol.evaluator_options)


def combine_chunks(chunks: Sequence[tuple[int, dict[str, float]]], *, seeds: int, preference_key: str) -> dict[str, float]:
    """The metrics of a whole prompt set from those of its chunks ``(prompts in chunk, metrics)``.

    Every metric the real evaluator reports is a mean over prompts (diversity, teacher_precision,
    spectral) or over images (the scores), N images per prompt, so the chunks' means weighted by
    their prompts give the whole set's; a score with unscored images (``<name>_unparsable``) is
    weighted by its scored images and its counts are summed; ``fidelity`` and ``quality`` are the
    product of the combined factors, as the evaluator computes them."""
    if not chunks:
        raise ValueError("combine_chunks needs at least one chunk")
    keys = [k for k in dict.fromkeys(k for _, m in chunks for k in m) if k not in ("fidelity", "quality")]
    total = sum(p for p, _ in chunks)
    out = {}
    for key in keys:  # a chunk without <name>_unparsable scored all its images
        if key.endswith("_unparsable"):
            out[key] = float(sum(m.get(key, 0.0) for _, m in chunks))
        elif f"{key}_unparsable" in keys:
            weights = [p * seeds - m.get(f"{key}_unparsable", 0.0) for p, m in chunks]
            scored = sum(weights)
            out[key] = (sum(w * m[key] for w, (_, m) in zip(weights, chunks) if w) / scored) if scored else math.nan
        else:
            out[key] = sum(p * m[key] for p, m in chunks) / total
    out["fidelity"] = out[preference_key] * out["teacher_precision"] * out["spectral"]
    out["quality"] = out["fidelity"]
    return out


def _chunks(prompts: Sequence[str], size: int) -> list[list[str]]:
    return [list(prompts[i:i + size]) for i in range(0, len(prompts), size)]


def score_teacher(evaluator: RealEvaluator, teacher: Generator, prompts: Sequence[str], *, seeds: int,
                  prompts_per_chunk: int) -> tuple[list[dict], dict[str, float]]:
    """The teacher's reference state per chunk and its own (leave-one-out) metrics."""
    states, chunks = [], []
    for chunk in _chunks(prompts, prompts_per_chunk):
        images = teacher(chunk, seeds)
        state = evaluator.teacher_reference_state(images, chunk)
        evaluator.set_teacher_reference(state)
        states.append(state)
        chunks.append((len(chunk), evaluator.score(images, chunk)))
    return states, combine_chunks(chunks, seeds=seeds, preference_key=evaluator.preference_key)


def score_generator(evaluator: RealEvaluator, generator: Generator, prompts: Sequence[str], states: list[dict], *,
                    seeds: int, prompts_per_chunk: int) -> dict[str, float]:
    """One student's metrics, chunk by chunk against the teacher's states of the same chunks."""
    chunks = []
    for chunk, state in zip(_chunks(prompts, prompts_per_chunk), states, strict=True):
        evaluator.set_teacher_reference(state)
        chunks.append((len(chunk), evaluator.score(generator(chunk, seeds), chunk)))
    return combine_chunks(chunks, seeds=seeds, preference_key=evaluator.preference_key)


def run_protocol(protocol: ProtocolConfig, *, prompts: Sequence[str], teachers: Mapping[str, Generator],
                 students: Iterable[tuple[str, str, Generator]], device: torch.device | str = "cpu",
                 evaluator: RealEvaluator | None = None) -> pd.DataFrame:
    """The protocol's table: one row per teacher and per student.

    Args:
        prompts: the evaluation prompts (the protocol's file, or the caller's default).
        teachers: group -> the teacher's generator (one per backbone: students are read against
            their own teacher).
        students: ``(name, group, generator)``, consumed one at a time (a generator may load a
            student on first call and free it after).
        evaluator: an already built evaluator (None: built here, after every path is checked).

    Columns: ``name``, ``group``, ``role`` ("teacher" / "student"), then every metric.
    """
    evaluator = evaluator or make_protocol_evaluator(protocol, device=device)
    n, size = protocol.seeds_per_prompt, protocol.prompts_per_chunk
    rows, states = [], {}
    for group, teacher in teachers.items():
        states[group], metrics = score_teacher(evaluator, teacher, prompts, seeds=n, prompts_per_chunk=size)
        rows.append({"name": f"teacher ({group})", "group": group, "role": "teacher", **metrics})
    for name, group, generator in students:
        if group not in states:
            raise ValueError(f"student {name!r} belongs to {group!r}, which has no teacher; teachers: {', '.join(states)}")
        metrics = score_generator(evaluator, generator, prompts, states[group], seeds=n, prompts_per_chunk=size)
        rows.append({"name": name, "group": group, "role": "student", **metrics})
    return pd.DataFrame(rows)


def markdown_table(df: pd.DataFrame, *, digits: int = 4) -> str:
    """A GitHub Markdown table of ``df`` (numbers rounded to ``digits`` significant figures)."""
    def cell(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.{digits}g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, out_dir: str | os.PathLike, *, name: str) -> tuple[Path, Path]:
    """``<out_dir>/<name>.parquet`` and ``<name>.md``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parquet, md = out / f"{name}.parquet", out / f"{name}.md"
    df.to_parquet(parquet, index=False)
    md.write_text(f"# Evaluation protocol `{name}`\n\n" + markdown_table(df))
    return parquet, md


def log_to_wandb(df: pd.DataFrame, *, project: str, name: str, directory: str | os.PathLike | None = None,
                 run_id: str | None = None, config: Mapping[str, Any] | None = None) -> str | None:
    """Put the table in a W&B run (a new one, or ``run_id``'s, resumed) and its rows in the run's
    summary as ``<protocol>/<row name>/<metric>``. Offline when no API key is set (``WANDB_MODE``
    is honoured); W&B never fails the evaluation: a failure is a warning and None. Returns the
    local run directory (``wandb sync DIR`` uploads an offline one)."""
    try:
        import wandb

        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        if mode == "disabled":
            return None
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=project, name=None if run_id else f"protocol-{name}", id=run_id,
                         resume="allow" if run_id else None, job_type="evaluation", mode=mode,
                         dir=None if directory is None else str(directory), config=dict(config or {}),
                         reinit="create_new", settings=wandb.Settings(console="off", x_disable_stats=True))
        table = df.copy()
        table.columns = [str(c) for c in table.columns]
        run.log({f"protocol/{name}": wandb.Table(dataframe=table.reset_index(drop=True))})
        run.summary.update({f"{name}/{row['name']}/{key}": float(value) for row in df.to_dict("records")
                            for key, value in row.items() if isinstance(value, (int, float))})
        run_dir = str(Path(run.settings.sync_dir))
        run.finish()
        return run_dir
    except Exception as exc:  # the table on disk is the result; W&B is a copy
        warnings.warn(f"W&B: the protocol table was not logged ({type(exc).__name__}: {exc}); the Parquet and "
                      "Markdown tables are written. Set WANDB_MODE=disabled to skip W&B.", RuntimeWarning, stacklevel=2)
        return None
