"""What a run says when it stops before its end: once, what happened, which step's checkpoint is intact (or that none
is), and the exact command that continues it (or, with nothing to continue, the one that starts it over).

The run (trainer/run.py) turns whatever stopped it into one `Stopped` carrying that text: an actor it cannot go on
without died (`ActorLost`), a user's reward failed (`RewardFailed`), Ctrl-C (`Interrupted`), or any other error
(its traceback in the run's logs/stop-traceback.txt). The command line prints it once and exits 3 (130 for Ctrl-C);
the run's metrics.jsonl keeps it as a `stop` record.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from common import checkpoint as ck


class Stopped(RuntimeError):
    """A run stopped before its end; the message is what to tell the user (what, checkpoint, command)."""
    exit_code = 3


class ActorLost(Stopped):
    """An actor the run cannot go on without died (a learner, a reference, a critic: they hold state Ray's restart
    would not bring back)."""


class RewardFailed(Stopped):
    """A reward (a user's function or server) failed mid-run with rewards.on_error=raise."""


class Interrupted(Stopped):
    """Ctrl-C (SIGINT) during the run."""
    exit_code = 130


class NothingToResume(ValueError):
    """`--resume` where the run folder holds no checkpoint: a bad command (exit 2), not a stopped run."""


def lost_actor(err: BaseException) -> str | None:
    """The name of the actor whose death `err` reports ('learner-0'), its class, or None for another error."""
    died = {"ActorDiedError", "RayActorError", "ActorUnavailableError"}
    if not died & {c.__name__ for c in type(err).__mro__}:  # also RayTaskError(ActorDiedError): a call whose
        return None                                          # argument came from the dead actor
    text = str(err)
    found = re.search(r"\bname: (\S+)", text) or re.search(r"class_name: (\S+)", text)
    return found.group(1) if found else "an actor"


def reward_error(err: BaseException) -> str | None:
    """The message of a RewardError behind `err` (raised here or inside a reward actor), else None."""
    from rewards.errors import RewardError

    if not isinstance(err, RewardError):
        return None
    cause = getattr(err, "cause", None)  # Ray's RayTaskError(RewardError) carries the actor's exception
    return str(cause if isinstance(cause, RewardError) else err).strip()


class Commands:
    """The command that started this run, as the user typed it (`argv` after `prog`), rewritten to continue the run
    or to start it over. Without one (a run started from Python), 'the same command' with what to add."""

    def __init__(self, prog: str | None = None, argv: list[str] | None = None):
        self.prog, self.argv = prog, None if argv is None else list(argv)

    def _base(self) -> list[str] | None:
        if self.argv is None:
            return None
        out, i = [], 0
        while i < len(self.argv):
            a = self.argv[i]
            if a == "--resume":  # with its folder, where one follows
                i += 2 if i + 1 < len(self.argv) and not self.argv[i + 1].startswith("-") \
                    and "=" not in self.argv[i + 1] else 1
                continue
            if a.startswith("--resume="):
                i += 1
                continue
            out.append(a)
            i += 1
        return out

    def again(self, run_name: str, resume: str | None = None) -> str:
        """The command that continues run `run_name` (folder `resume` where one was named)."""
        folder = resume not in (None, "auto")  # a run folder named on the command line: resumed by that name
        tail = ["--resume", resume] if folder else [f"train.run_name={run_name}", "--resume"]
        base = self._base()
        if base is None:
            return f"the same command with {' '.join(tail)}"
        if not folder:
            base = [a for a in base if not a.startswith("train.run_name=")]
        return shlex.join([*shlex.split(self.prog or "raygrpo train"), *base, *tail])

    def start_over(self) -> str:
        """The command without --resume (a fresh run; an old folder of the same name is kept, renamed)."""
        base = self._base()
        if base is None:
            return "the same command without --resume"
        return shlex.join([*shlex.split(self.prog or "raygrpo train"), *base])


def checkpoint_line(path: Path, commands: Commands, resume: str | None = None) -> str:
    """Which step's checkpoint is intact and the command that continues from it; or that none is, and the command
    that starts over."""
    last = ck.find_resumable(path)
    if last is None:
        return f"no checkpoint was saved before the stop; start over with: {commands.start_over()}"
    step = ck.load_driver_state(last)["step"]
    what = f"step {step}'s checkpoint" if step else "the checkpoint of the run's start"
    return f"{what} is intact ({last}); continue with: {commands.again(path.name, resume)}"


def message(what: str, path: Path, commands: Commands, resume: str | None = None) -> str:
    return f"{what}\n{checkpoint_line(path, commands, resume)}"
