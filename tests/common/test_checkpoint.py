"""Checkpoints survive what kills them: a full disk during a save, a kill in the middle of writing, a kill
between the two renames; pruning keeps the newest and never touches best."""
import errno
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from common import checkpoint as ck

ROOT = Path(__file__).resolve().parents[2]


def fill(step: int):
    def write(folder: Path) -> None:
        (folder / "trainer_state.pt").write_bytes(b"x" * 1000)
        (folder / "model.safetensors").write_text(f"weights of step {step}")
    return write


def save(run: Path, step: int, **kw) -> Path:
    return ck.atomic_checkpoint(run / "checkpoints" / "last", fill(step), {"step": step}, **kw)


def test_a_full_disk_during_a_save_leaves_the_previous_checkpoint(tmp_path):
    save(tmp_path, 10)

    def full_disk(folder: Path) -> None:
        (folder / "trainer_state.pt").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ck.CheckpointError, match=r"No space left on device.*the previous .*last is intact.*--resume"):
        ck.atomic_checkpoint(tmp_path / "checkpoints" / "last", full_disk, {"step": 20})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last"]  # no half-written folder
    assert ck.find_resumable(tmp_path) == tmp_path / "checkpoints" / "last"
    assert ck.load_driver_state(tmp_path / "checkpoints" / "last")["step"] == 10


def test_a_kill_in_the_middle_of_a_save_leaves_the_previous_checkpoint(tmp_path):
    save(tmp_path, 10)
    code = f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from common import checkpoint as ck

        def dies(folder):
            (folder / "trainer_state.pt").write_bytes(b"half a checkpoint")
            os.kill(os.getpid(), signal.SIGKILL)

        ck.atomic_checkpoint(Path({str(tmp_path)!r}) / "checkpoints" / "last", dies, {{"step": 20}})
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    found = ck.find_resumable(tmp_path)
    assert found == tmp_path / "checkpoints" / "last" and ck.load_driver_state(found)["step"] == 10
    assert (found / "model.safetensors").read_text() == "weights of step 10"
    save(tmp_path, 20)  # the next save clears the leftover and goes through
    assert ck.load_driver_state(ck.find_resumable(tmp_path))["step"] == 20
    assert not (tmp_path / "checkpoints" / "last.tmp").exists()


def test_a_kill_between_the_two_renames_resumes_from_the_old_one(tmp_path):
    save(tmp_path, 10)
    ckpts = tmp_path / "checkpoints"
    (ckpts / "last").rename(ckpts / "last.old")  # the first rename happened, the second did not
    assert ck.find_resumable(tmp_path) == ckpts / "last.old"


def test_kept_checkpoints_are_the_newest_and_resume_falls_back_to_them(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ck.atomic_checkpoint(ckpts / "best", fill(1), {"step": 1})
    for step in range(10, 60, 10):
        last = ckpts / "last"
        prev = ck.step_folder(ckpts, ck.load_driver_state(last)["step"]) if last.exists() else None
        save(tmp_path, step, keep_previous_as=prev)
        ck.prune(ckpts, 2)
    assert sorted(p.name for p in ckpts.iterdir()) == ["best", "last", "step-000030", "step-000040"]
    assert json.loads((ckpts / "step-000040" / "driver_state.json").read_text())["step"] == 40
    (ckpts / "last" / "trainer_state.pt").unlink()  # a damaged last: resume from the newest kept one
    assert ck.find_resumable(tmp_path) == ckpts / "step-000040"
