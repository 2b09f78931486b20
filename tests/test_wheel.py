"""The package as a user gets it: the wheel built from this checkout, installed (not editable) into a fresh venv, used
from a folder outside the repo: every top-level package imports from the install, `raygrpo --help` answers, the
presets ship, and a 1-step job of docs/examples/your_task runs on the tiny policy."""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["cluster", "rollout", "learner", "rewards", "retrieval", "tasks", "tools", "common", "trainer", "jobs"]


def test_the_package_list_is_every_library_folder():
    import tomllib

    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    folders = sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in ("tests",))
    assert sorted(p for p in listed if "." not in p) == folders == sorted(PACKAGES)
    # folders of files, not code, listed so that setuptools ships them and says nothing: the presets, the XQuAD slice
    data = sorted(p for p in listed if "." in p)
    assert data == ["jobs.configs", "jobs.data"] == sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
                                                           ["setuptools"]["package-data"])


@pytest.mark.slow
def test_the_wheel_installs_and_trains_outside_the_repo(tmp_path, tiny_policy_dir):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True, text=True, timeout=600)
    wheel = next(dist.glob("raygrpo-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies (torch, vLLM, Ray: GBs) come from this venv's site-packages as a plain path: its .pth files,
    # the editable checkout's finder among them, are not read, so `raygrpo` can only come from the wheel
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, timeout=600,
                   capture_output=True, text=True)
    user = tmp_path / "elsewhere"
    shutil.copytree(ROOT / "docs" / "examples" / "your_task", user)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    found = subprocess.run([str(py), "-c", "import importlib; print('\\n'.join(importlib.import_module(p).__file__ "
                            f"for p in {PACKAGES!r}))"], cwd=user, env=env, capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr
    assert all(line.startswith(str(site)) for line in found.stdout.split()), found.stdout  # not the checkout
    raygrpo = str(venv / "bin" / "raygrpo")
    helped = subprocess.run([raygrpo, "--help"], cwd=user, env=env, capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "train" in helped.stdout and "samples" in helped.stdout
    presets = subprocess.run([raygrpo, "presets"], cwd=user, env=env, capture_output=True, text=True, timeout=120)
    assert "smoke" in presets.stdout and "xquad_en_sft_grpo" in presets.stdout
    shipped = site / "jobs" / "data"  # the XQuAD-en slice a clone or an install trains on without ../shared
    assert all((shipped / f).is_file() for f in ("xquad.en.first200.json", "XQUAD.md", "CC-BY-SA-4.0.txt"))
    job = subprocess.run([raygrpo, "train", "--config", "job.yaml", "--inprocess", f"model.policy={tiny_policy_dir}",
                          "train.phases.0.steps=1", "train.eval_at_start=false", "logging.mlflow=false"],
                         cwd=user, env=env, capture_output=True, text=True, timeout=900)
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-3000:]
    assert (user / "runs" / "my-task" / "checkpoints" / "last" / "model.safetensors").is_file()
    assert "reward/score/correct" in (user / "runs" / "my-task" / "metrics.jsonl").read_text()
