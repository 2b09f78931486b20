"""Imports run one way through the layers, and no two modules import each other (directly or in a longer
circle). Read from the code's own import statements, function-level (lazy) imports included.

    common  <-  learner, rollout, rewards, retrieval  <-  tasks, tools, cluster  <-  trainer  <-  jobs  <-  bench
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"common": 0, "learner": 1, "rollout": 1, "rewards": 1, "retrieval": 1, "tasks": 2, "tools": 2, "cluster": 2,
          "trainer": 3, "jobs": 4, "bench": 5}


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): p
            for pkg in LAYERS for p in (ROOT / pkg).glob("*.py") if p.name != "__init__.py"}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Project modules that `path` imports anywhere in it ('from rewards import qa' -> rewards.qa)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out |= {n for n in names if n in known}
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports_of(p, set(mods)) - {m} for m, p in mods.items()}


def test_imports_never_run_up_a_layer():
    wrong = [f"{a} imports {b}" for a, deps in graph().items() for b in deps
             if LAYERS[b.split(".")[0]] > LAYERS[a.split(".")[0]]]
    assert not wrong, wrong


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(g[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(path[path.index(d):] + [m, d]) if d in path else f"{m} -> {d}")
            elif d not in state:
                visit(d, path + [m])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [])
    assert not cycles, cycles


def test_the_graph_is_read():
    g = graph()
    assert "tasks.registry" in g and "rewards.registry" in g["tasks.registry"]
    assert "trainer.run" in g and "tasks.registry" in g["trainer.run"]


def test_jobs_holds_entry_scripts_only():
    """jobs/ is scripts and presets: every module runs as a script, and only bench/ and tests import one."""
    scripts = [p for p in (ROOT / "jobs").glob("*.py") if p.name != "__init__.py"]
    assert scripts and all('if __name__ == "__main__"' in p.read_text() for p in scripts), scripts
    wrong = [f"{a} imports {b}" for a, deps in graph().items() for b in deps
             if b.startswith("jobs.") and not a.startswith(("bench.", "jobs."))]
    assert not wrong, wrong


def test_below_the_job_the_run_plan_is_the_only_reader_of_rl_decisions():
    """trainer/ and cluster/ read the algorithm, LoRA and each phase's resolved values from the run plan
    (common/plan.py), never from the config: a decision taken twice is where a phase's override slipped past a rule
    (issue 30: overlap with a phase's learner old logprobs, the precision line's TIS cap)."""
    import re

    forbidden = re.compile(r"\b(cfg|job|self\.cfg|self\.job|run\.cfg)\.algo\b|\.learner\.lora\b|\.algo_for\(|"
                           r"\.rollout_for\(|learner\.inner_steps|train\.(prompts_per_step|eval_every|patience)\b")
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for pkg in ("trainer", "cluster")
             for p in sorted((ROOT / pkg).glob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1) if forbidden.search(line)]
    assert not found, found
