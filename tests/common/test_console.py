"""The quiet console: library logs, warnings and actor output go to the run folder's logs/, the job's own lines
stay on the console; --verbose (RAYGRPO_VERBOSE=1) shows everything. Each case runs in a fresh interpreter,
since logging and file descriptors are process-wide."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DRIVER = """
import logging, sys, warnings
sys.path.insert(0, {root!r})
from common import console
console.quiet()
logging.getLogger("transformers.modeling_utils").warning("lib chatter before the run folder exists")
warnings.warn("a deprecation nobody asked to see")
print("[step 1 | grpo 1/2] R 0.5", flush=True)
path = console.attach(__import__("pathlib").Path({logs!r}))
logging.getLogger("vllm.engine").info("engine chatter after")
logging.getLogger("ray").warning("ray chatter")
logging.getLogger("anything").error("a real error")
print("wrote", path, flush=True)
"""


def run(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})}, cwd=ROOT)


def test_library_logs_go_to_the_run_folder_and_the_console_keeps_the_jobs_lines(tmp_path):
    logs = tmp_path / "run" / "logs"
    proc = run(DRIVER.format(root=str(ROOT), logs=str(logs)), {"RAYGRPO_VERBOSE": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[step 1 | grpo 1/2] R 0.5", f"wrote {logs / 'driver.log'}"]
    assert proc.stderr.strip().endswith("a real error") and "chatter" not in proc.stderr  # errors still show
    text = (logs / "driver.log").read_text()
    for line in ("lib chatter before the run folder exists", "a deprecation nobody asked to see",
                 "engine chatter after", "ray chatter", "a real error"):
        assert line in text


def test_verbose_leaves_every_log_on_the_console(tmp_path):
    logs = tmp_path / "logs"
    proc = run(DRIVER.format(root=str(ROOT), logs=str(logs)), {"RAYGRPO_VERBOSE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "lib chatter" in proc.stderr and "deprecation" in proc.stderr
    assert "wrote None" in proc.stdout and not logs.exists()


ACTOR = """
import logging, os, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from common import console
console.quiet()
console.attach(Path({logs!r}))
from cluster import runtime
from cluster.groups import ActorGroup, get

class Chatty:
    def __init__(self):
        print("python print in __init__", flush=True)
        os.write(2, b"C-level write to fd 2\\n")
        logging.getLogger("vllm.core").warning("library warning in the actor")

    def hello(self):
        print("python print in a method", flush=True)
        return os.getpid()

runtime.start("ray", None, 1, runtime.actor_env(1, 1.0))
group = ActorGroup.create("chatty", Chatty, 1, "ray", num_cpus=0.1)
pid = get(group.call(Chatty.hello))
runtime.shutdown("ray")
print("done", pid != os.getpid(), flush=True)
"""


def test_an_actors_output_goes_to_its_own_log_file(tmp_path):
    """Real Ray: the actor's prints, C-level writes and library logs land in logs/chatty-0.log, none on the
    driver's console."""
    logs = tmp_path / "logs"
    proc = run(ACTOR.format(root=str(ROOT), logs=str(logs)), {"RAYGRPO_VERBOSE": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "done True"
    assert proc.stderr.strip() == ""  # not even Ray's start-up lines: they are in driver.log
    assert "Started a local Ray instance" in (logs / "driver.log").read_text()
    text = (logs / "chatty-0.log").read_text()
    for line in ("python print in __init__", "C-level write to fd 2", "library warning in the actor",
                 "python print in a method"):
        assert line in text
