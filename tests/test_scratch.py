"""Throwaway directories (metrics, --ephemeral prices) left by a server killed with SIGKILL are
removed by the next server's start; a live owner's never are (scratch.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ServerProcess
from tradestats import scratch

OWNER = """
import sys, time
from pathlib import Path
from tradestats import scratch
made = scratch.make_owned_directory(sys.argv[2], Path(sys.argv[1]))
(made / "data").write_bytes(b"x" * 4096)
print(made, flush=True)
time.sleep(600)
"""


def start_owner(base, kind="metrics-"):
    """A process owning a new throwaway directory under base, and that directory."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(base), kind],
                             stdout=subprocess.PIPE, text=True)
    line = owner.stdout.readline().strip()
    assert line, "the owner did not make its directory"
    return owner, Path(line)


def kill(process) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def test_only_directories_whose_owners_are_gone_are_removed(tmp_path):
    killed, abandoned = start_owner(tmp_path)
    alive, in_use = start_owner(tmp_path, kind="")
    try:
        kill(killed)
        unmarked = tmp_path / (scratch.PREFIX + "unmarked")   # being made, or someone else's
        unmarked.mkdir()
        other = tmp_path / "other-metrics"
        other.mkdir()
        (other / scratch.OWNER_MARK).touch()
        elsewhere = tmp_path / "elsewhere"   # marked, unlocked, reached only by a link
        elsewhere.mkdir()
        (elsewhere / scratch.OWNER_MARK).touch()
        (tmp_path / (scratch.PREFIX + "link")).symlink_to(elsewhere)
        (tmp_path / (scratch.PREFIX + "file")).write_bytes(b"")
        strangers = tmp_path / (scratch.PREFIX + "strangers")   # another user's (as root)
        if os.getuid() == 0:
            strangers.mkdir()
            (strangers / scratch.OWNER_MARK).touch()
            os.chown(strangers, 65534, 65534)
        assert abandoned.is_dir()   # SIGKILL ran no clean-up
        assert scratch.remove_abandoned(tmp_path) == [abandoned]
        assert not abandoned.exists()
        assert (in_use / "data").stat().st_size == 4096 and unmarked.is_dir() and other.is_dir()
        assert (elsewhere / scratch.OWNER_MARK).exists()
        assert strangers.is_dir() == (os.getuid() == 0)
        assert scratch.remove_abandoned(tmp_path) == []
        kill(alive)
        assert scratch.remove_abandoned(tmp_path) == [in_use]
    finally:
        for owner in (killed, alive):
            if owner.poll() is None:
                kill(owner)


def test_a_forked_child_keeps_its_parents_directory(tmp_path):
    """Workers forked from a master share its lock: a directory outlives a killed master while
    a worker still uses it."""
    made = scratch.make_owned_directory("metrics-", tmp_path)
    child = os.fork()
    if child == 0:
        time.sleep(600)
        os._exit(0)
    try:
        scratch._held.remove(descriptor := scratch._held[-1])
        os.close(descriptor)   # this process (the "master") lets go; the child still holds it
        assert scratch.remove_abandoned(tmp_path) == []
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        assert scratch.remove_abandoned(tmp_path) == [made]
    finally:
        try:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_a_starting_server_removes_what_a_killed_server_left(tmp_path):
    killed = ServerProcess(None, ("--ephemeral", "--workers", "1"), tmp_path / "killed.log")
    left = _owned_by(killed.process.pid)
    assert len(left) == 2, left   # its metrics and its prices
    for pid in [*killed.worker_pids(), killed.process.pid]:
        os.kill(pid, signal.SIGKILL)
    killed.process.wait(10)
    assert all(path.is_dir() for path in left)
    running = ServerProcess(None, ("--ephemeral", "--workers", "1"), tmp_path / "next.log")
    try:
        assert not any(path.exists() for path in left)
        for path in left:
            assert f"{path}: removed" in running.log, running.log
        own = _owned_by(running.process.pid)
        assert len(own) == 2 and all(path.is_dir() for path in own), own
    finally:
        assert running.stop() == 0
    assert not any(path.exists() for path in own)   # removed at a clean stop, as before


def _owned_by(pid: int) -> list:
    """The throwaway directories process pid holds open (its locked descriptors)."""
    owned = []
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return owned
    for descriptor in descriptors:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{descriptor}")
        except OSError:
            continue
        if os.path.basename(target).startswith(scratch.PREFIX) and os.path.isdir(target):
            owned.append(Path(target))
    return owned
