"""Run directories and resumable checkpoints.

runs/<name>/
  config.yaml            the validated config
  metrics.jsonl          one record per step / eval / info
  checkpoints/last/      HF model + tokenizer + trainer_state.pt (optimizer, scheduler, RNG) + driver_state.json
  checkpoints/best/      HF model + tokenizer + eval.json (best eval F1 so far)
  curves.png, summary.json

A checkpoint is written into `<name>.tmp` and swapped in by rename, so a kill mid-write leaves the
previous checkpoint intact (`<name>.old` is kept until the new one is in place and is used by
`--resume` if the kill fell between the two renames).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable


def atomic_checkpoint(target: Path, write: Callable[[Path], None], driver_state: dict | None = None) -> Path:
    """`write(tmp_dir)` fills a fresh folder; then it replaces `target` in two renames."""
    tmp, old = target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if driver_state is not None:
        (tmp / "driver_state.json").write_text(json.dumps(driver_state, indent=1))
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def find_resumable(run: Path) -> Path | None:
    for name in ("last", "last.old"):
        path = run / "checkpoints" / name
        if (path / "driver_state.json").is_file() and (path / "trainer_state.pt").is_file():
            return path
    return None


def load_driver_state(ckpt: Path) -> dict:
    return json.loads((ckpt / "driver_state.json").read_text())
