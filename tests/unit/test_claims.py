"""Claims: one run per configuration, heartbeats visible from any node, stale claims taken over."""

import json
import multiprocessing
import os
import time

from locator.bench import claims


def _lock(directory, name, record, age=0.0):
    path = claims.lock_path(directory, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record if isinstance(record, str) else json.dumps(record))
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def test_a_claim_excludes_others_until_released(tmp_path):
    first = claims.claim(tmp_path, "a")
    assert first is not None
    assert claims.claim(tmp_path, "a") is None  # this process's own live claim too
    found = claims.holder(tmp_path, "a")
    assert found.pid == os.getpid() and "heartbeat 0 s ago" in found.describe()
    first.release()
    assert claims.holder(tmp_path, "a") is None
    with claims.claim(tmp_path, "a") as again:
        assert again is not None
    assert not list((tmp_path / claims.FOLDER).iterdir())


def test_the_heartbeat_keeps_a_long_claim_fresh(tmp_path):
    held = claims.claim(tmp_path, "a", heartbeat=0.05)
    path = claims.lock_path(tmp_path, "a")
    os.utime(path, (time.time() - 100, time.time() - 100))
    time.sleep(0.3)
    assert claims.holder(tmp_path, "a").age < 5
    held.release()


def test_claims_of_other_hosts_are_kept_while_fresh_and_taken_over_when_stale(tmp_path):
    other = {"pid": 1, "host": "node-7", "time": "", "token": "x"}
    _lock(tmp_path, "fresh", other, age=10)
    assert claims.claim(tmp_path, "fresh") is None
    _lock(tmp_path, "stale", other, age=claims.STALE_SECONDS + 1)
    taken = claims.claim(tmp_path, "stale")
    assert taken is not None and claims.holder(tmp_path, "stale").host != "node-7"
    taken.release()


def test_unreadable_and_reused_pid_claims_go_stale_by_heartbeat(tmp_path):
    _lock(tmp_path, "garbled", "{not json", age=5)
    assert claims.claim(tmp_path, "garbled") is None
    assert claims.holder(tmp_path, "garbled").describe().startswith("an unreadable claim")
    _lock(tmp_path, "garbled", "{not json", age=claims.STALE_SECONDS + 1)
    assert claims.claim(tmp_path, "garbled") is not None
    # A live pid on this host that is not the claimant's (pid reuse): stale once silent.
    import socket

    reused = {"pid": os.getppid(), "host": socket.gethostname(), "time": "", "token": "y"}
    _lock(tmp_path, "reused", reused, age=claims.STALE_SECONDS + 1)
    assert claims.claim(tmp_path, "reused") is not None


def test_a_dead_local_process_claim_is_taken_over_at_once(tmp_path):
    import socket
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    _lock(tmp_path, "a", {"pid": child.pid, "host": socket.gethostname(), "token": "z"})
    assert claims.claim(tmp_path, "a") is not None


def _race(directory, name, queue):
    held = claims.claim(directory, name)
    queue.put(held is not None)
    time.sleep(0.5)  # hold it while the others try


def test_simultaneous_claims_elect_exactly_one(tmp_path):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    runs = [context.Process(target=_race, args=(tmp_path, "a", queue)) for _ in range(6)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert sorted(queue.get() for _ in runs) == [False] * 5 + [True]


def test_a_claim_that_cannot_be_written_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import pathlib

    import pytest

    from locator.errors import LocatorError

    def full(self, *args, **kwargs):
        with open(self, "w") as handle:
            handle.write("{")  # part of it reached the disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    with pytest.raises(LocatorError, match="No space left on device"):
        claims.claim(tmp_path, "a")
    monkeypatch.undo()
    assert not list((tmp_path / claims.FOLDER).iterdir())
