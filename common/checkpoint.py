"""Run directories and resumable checkpoints.

runs/<name>/
  config.yaml            the validated config
  metrics.jsonl          one record per step / eval / info
  checkpoints/last/      HF model + tokenizer + trainer_state.pt (optimizer, scheduler, RNG) + driver_state.json
  checkpoints/step-N/     earlier `last` checkpoints, the newest `train.keep_checkpoints - 1` of them
  checkpoints/best/      HF model + tokenizer + eval.json (best primary eval metric so far); never pruned
  curves.png, summary.json

A checkpoint is written into `<name>.tmp` and swapped in by rename, so a kill mid-write leaves the
previous checkpoint intact (`<name>.old` is kept until the new one is in place and is used by
`--resume` if the kill fell between the two renames). A write that fails (a full disk) removes its
half-written folder and says the previous checkpoint is intact.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable


TRAINER_DIR = "trainer"  # a checkpoint's training-only weights (LoRA state, critic): not at the model folder's top
# level, where vLLM would load every *.safetensors file as the model's


class CheckpointError(OSError):
    """A checkpoint could not be written; the previous one is intact."""


def atomic_checkpoint(target: Path, write: Callable[[Path], None], driver_state: dict | None = None,
                      keep_previous_as: Path | None = None) -> Path:
    """`write(tmp_dir)` fills a fresh folder; then it replaces `target` in two renames. With `keep_previous_as`,
    the replaced checkpoint is renamed there instead of deleted."""
    tmp, old = target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        write(tmp)
        if driver_state is not None:
            (tmp / "driver_state.json").write_text(json.dumps(driver_state, indent=1))
    except OSError as err:  # a full disk, a quota, a lost mount: the previous checkpoint stays
        shutil.rmtree(tmp, ignore_errors=True)
        kept = f"the previous {target} is intact" if target.exists() else "there was no previous one"
        raise CheckpointError(f"checkpoint {target.name} could not be written ({err}); {kept}. Free space under "
                              f"{target.parent} and rerun with --resume") from err
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        if keep_previous_as is not None and not keep_previous_as.exists():
            target.rename(keep_previous_as)
        else:
            target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def step_folder(checkpoints: Path, step: int) -> Path:
    return checkpoints / f"step-{step:06d}"


def prune(checkpoints: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` step-N checkpoints (never best, last or a phase's); return what went."""
    steps = sorted(checkpoints.glob("step-[0-9]*"), key=lambda p: p.name)
    gone = steps[:max(0, len(steps) - keep)]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return gone


def resumable(path: Path) -> bool:
    return (path / "driver_state.json").is_file() and (path / "trainer_state.pt").is_file()


def find_resumable(run: Path) -> Path | None:
    """The newest complete resumable checkpoint: last, then last.old (a kill between the two renames), then the
    kept step-N checkpoints, newest first."""
    ckpts = run / "checkpoints"
    for path in (ckpts / "last", ckpts / "last.old", *sorted(ckpts.glob("step-[0-9]*"), reverse=True)):
        if resumable(path):
            return path
    return None


def load_driver_state(ckpt: Path) -> dict:
    return json.loads((ckpt / "driver_state.json").read_text())


def update_driver_state(ckpt: Path, driver_state: dict) -> None:
    """A checkpoint's driver state rewritten in place, atomically (its weights and optimizer are what the state
    describes: an eval after the save, or a phase that ended on the step the checkpoint holds)."""
    tmp = ckpt / "driver_state.json.tmp"
    tmp.write_text(json.dumps(driver_state, indent=1))
    os.replace(tmp, ckpt / "driver_state.json")
