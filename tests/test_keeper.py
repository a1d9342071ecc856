"""keeper.py: nothing a worker's script starts outlives the worker, however the worker ends (no Ray here).

``scripts/keeper_actor.py`` stands in for a Ray actor: it calls ``keeper.start()`` and then starts
``sleep`` as a child, as a child in a new session, as a double-forked daemon, and a pure-Python
double-forked daemon that never execs and closes all its descriptors. The "actor" is then
SIGKILLed, exits or crashes (the watcher must kill them all), or calls ``keeper.kill_marked()``
(gone while it still lives). What is not marked survives: a process the actor started before
``start()``, and unrelated processes, one of them carrying another keeper's mark.

No assertion depends on timing: processes are polled with a generous deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import MARKER, SCRIPTS

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="keeper works on Linux only")

DEADLINE_S = 30.0
MARKED = ["child", "session", "daemon", "forked"]
REPO = Path(__file__).resolve().parent.parent


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def still_alive(pids: dict[str, int]) -> list[str]:
    """The names of ``pids`` still alive after DEADLINE_S (polling: an empty list comes as soon as it can)."""
    deadline = time.monotonic() + DEADLINE_S
    while (left := [name for name, pid in pids.items() if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not path.exists():
        assert proc.poll() is None, f"the actor ended early: {proc.returncode}"
        assert time.monotonic() < deadline, f"no {path.name}"
        time.sleep(0.05)


@pytest.fixture
def processes(run_marker):
    """Start processes, (pid, create_time) remembered; at the end every one still alive is killed."""
    started: list[psutil.Process] = []

    def track(pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            started.append(psutil.Process(pid))

    def popen(args: list[str], **kwargs) -> subprocess.Popen:
        env = {**os.environ, MARKER: run_marker, **kwargs.pop("env", {})}
        proc = subprocess.Popen(args, env=env, **kwargs)
        track(proc.pid)
        return proc

    yield popen, track
    for proc in started:
        with contextlib.suppress(psutil.Error):
            proc.kill()  # psutil checks the create time: never a process that took the pid since


def start_actor(tmp_path: Path, processes, ending: str) -> tuple[subprocess.Popen, dict, dict[str, int]]:
    popen, track = processes
    state = tmp_path / "state.json"
    actor = popen([sys.executable, str(SCRIPTS / "keeper_actor.py"), str(state), ending],
                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=(tmp_path / "stderr").open("w"),
                  env={"PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    wait_for(state, actor)
    info = json.loads(state.read_text())
    for pid in [*info["pids"].values(), info["watcher"]]:
        track(pid)
    # unrelated: no mark, and another keeper's mark
    others = {"unmarked": popen(["sleep", "1000"]).pid,
              "other mark": popen(["sleep", "1000"], env={"BATCHINFER_KEEPER_0123456789abcdef": "1"}).pid}
    return actor, info, others


def assert_watcher_is_detached(actor: subprocess.Popen, info: dict) -> None:
    """Not the actor's child, in a session of its own, unmarked, and none of the actor's descriptors."""
    watcher = psutil.Process(info["watcher"])
    assert watcher.ppid() != actor.pid
    assert os.getsid(watcher.pid) not in (os.getsid(actor.pid), watcher.pid)  # a session leader could get a terminal
    assert len(info["mark"]) == 1 and info["mark"][0] not in watcher.environ()
    held = {os.readlink(f"/proc/{watcher.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{watcher.pid}/fd")}
    assert held <= {"/dev/null", "anon_inode:[pidfd]"}, held


@pytest.mark.parametrize("ending", ["sigkill", "exit", "segfault"])
def test_what_the_actor_started_is_killed_once_it_is_gone(tmp_path, processes, ending):
    actor, info, others = start_actor(tmp_path, processes, ending)
    pids = info["pids"]
    assert all(alive(pid) for pid in pids.values())
    assert_watcher_is_detached(actor, info)

    if ending == "sigkill":
        actor.kill()
    else:
        actor.stdin.write(b"end\n")
        actor.stdin.flush()
    assert actor.wait(DEADLINE_S) == {"sigkill": -9, "exit": 3, "segfault": -11}[ending]

    assert still_alive({name: pids[name] for name in MARKED}) == []
    assert still_alive({"watcher": info["watcher"]}) == [], "the watcher did not exit"
    assert all(alive(pid) for pid in [pids["before"], *others.values()]), "a process without the mark was killed"


def test_kill_marked_kills_what_the_actor_started_while_it_lives(tmp_path, processes):
    actor, info, others = start_actor(tmp_path, processes, "graceful")
    pids = info["pids"]
    assert all(alive(pid) for pid in pids.values())

    actor.stdin.write(b"close\n")
    actor.stdin.flush()
    wait_for(tmp_path / "state.json.killed", actor)
    # kill_marked() returns once they are gone
    assert [name for name in MARKED if alive(pids[name])] == []
    assert actor.poll() is None and alive(info["watcher"])
    assert_watcher_is_detached(actor, info)

    actor.stdin.close()
    assert actor.wait(DEADLINE_S) == 0
    assert still_alive({"watcher": info["watcher"]}) == [], "the watcher did not exit"
    assert all(alive(pid) for pid in [pids["before"], *others.values()]), "a process without the mark was killed"
