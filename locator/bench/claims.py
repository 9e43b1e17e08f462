"""Claims: runs sharing a results folder compute each configuration once, and never wait forever.

A run claims a configuration (or a baseline) before computing it by creating
``_claims/<name>.lock`` (hard-linked into place from a written temporary file, so a lock
appears whole or not at all). While it holds the claim, a background thread refreshes the lock
file's modification time every `HEARTBEAT_SECONDS`: that heartbeat is what any node sharing the
folder can observe. A claim is stale, and may be taken over by another run, when

- its heartbeat is older than `STALE_SECONDS` (the holder died, on any host, or its lock is
  damaged or was left by a process whose pid was since reused: nobody refreshes it); or
- it was made on this host by a process that no longer exists (taken over at once).

Clocks of nodes sharing a folder may differ by a few seconds; `STALE_SECONDS` is ten
heartbeats, far above any such skew. `holder` says who holds a claim and how fresh it is, so a
run waiting for another's configurations can say what it waits for.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from locator.errors import LocatorError

HEARTBEAT_SECONDS = 15.0
"""How often a live run refreshes each claim it holds."""

STALE_SECONDS = 150.0
"""A claim whose heartbeat is older than this is taken over by any run."""

FOLDER = "_claims"


def lock_path(directory: str | Path, name: str) -> Path:
    """Where the claim on `name` lives in the results folder `directory`."""
    return Path(directory) / FOLDER / f"{name}.lock"


@dataclass(frozen=True, kw_only=True)
class Holder:
    """Who holds a claim: `host` and `pid` as recorded (None when the lock is unreadable),
    `age` the seconds since its last heartbeat."""

    host: str | None
    pid: int | None
    age: float

    def describe(self) -> str:
        """``host:pid, heartbeat 12 s ago`` for progress lines."""
        who = "an unreadable claim" if self.host is None else f"{self.host}:{self.pid}"
        return f"{who}, heartbeat {self.age:.0f} s ago"


def holder(directory: str | Path, name: str) -> Holder | None:
    """The holder of the claim on `name`, or None when nobody claims it."""
    return _read(lock_path(directory, name))


def _read(path: Path) -> Holder | None:
    """The holder recorded in the lock file `path` (None when there is none)."""
    try:
        age = time.time() - path.stat().st_mtime
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict):
        return Holder(host=None, pid=None, age=max(0.0, age))
    pid = record.get("pid")
    host = record.get("host")
    return Holder(
        host=host if isinstance(host, str) else None,
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        age=max(0.0, age),
    )


def _dead_here(found: Holder) -> bool:
    """Whether the holder was a process on this host that no longer exists."""
    if found.host != socket.gethostname() or found.pid is None:
        return False
    if found.pid == os.getpid():
        return False  # this process: a claim it holds is live (see `claim`)
    try:
        os.kill(found.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def is_stale(found: Holder, stale_after: float | None = None) -> bool:
    """Whether a claim may be taken over: no heartbeat for `stale_after` seconds (default:
    `STALE_SECONDS` as it is when called), or its process is gone from this host."""
    limit = STALE_SECONDS if stale_after is None else stale_after
    return found.age > limit or _dead_here(found)


class Claim:
    """A claim this process holds; its heartbeat runs until `release` (or the `with` block
    ends)."""

    def __init__(self, path: Path, token: str, heartbeat: float) -> None:
        self.path = path
        self.token = token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat,), daemon=True)
        self._thread.start()

    def _beat(self, heartbeat: float) -> None:
        while not self._stop.wait(heartbeat):
            try:
                os.utime(self.path)
            except OSError:
                return  # taken over or the folder is gone: nothing left to refresh

    def _mine(self) -> bool:
        try:
            return json.loads(self.path.read_text(encoding="utf-8")).get("token") == self.token
        except (OSError, ValueError, AttributeError):
            return False

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still this claim's."""
        self._stop.set()
        self._thread.join()
        if self._mine():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim(
    directory: str | Path,
    name: str,
    *,
    heartbeat: float = HEARTBEAT_SECONDS,
    stale_after: float | None = None,
) -> Claim | None:
    """Claim `name` for this process: a `Claim` (release it when done), or None while another
    live run holds it. A stale claim (`is_stale`) is taken over: it is first renamed aside, and
    put back if what was renamed turns out to be a fresh claim made meanwhile."""
    path = lock_path(directory, name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _unusable(path.parent, error) from None
    if path.is_dir():
        raise _unusable(path, IsADirectoryError(21, "a folder, not a lock file"))
    token = secrets.token_hex(8)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "token": token,
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{token}")
    try:
        try:  # inside the `finally`: a full disk leaves no partial temporary behind
            temporary.write_text(json.dumps(record), encoding="utf-8")
        except OSError as error:
            raise LocatorError(
                f"cannot write a claim in {str(path.parent)!r} "
                f"({error.strerror or type(error).__name__}); free some space or make the "
                "folder writable, then rerun."
            ) from None
        for _ in range(3):
            try:
                os.link(temporary, path)  # atomic, and fails when the lock exists
                return Claim(path, token, heartbeat)
            except FileExistsError:
                found = _read(path)
                if found is not None and not is_stale(found, stale_after):
                    return None
                _take_over(path, stale_after)
        return None
    finally:
        temporary.unlink(missing_ok=True)


def _unusable(path: Path, error: OSError) -> LocatorError:
    """A one-line error for a claims path locator cannot use (a file or folder in its way)."""
    reason = error.strerror or type(error).__name__
    return LocatorError(
        f"cannot claim work in {str(path)!r} ({reason}); move it away and rerun (claims are "
        "recreated as needed)."
    )


def _take_over(path: Path, stale_after: float | None) -> None:
    """Move a stale lock aside; a lock that is fresh once moved (another run took over first
    and claimed anew) goes back."""
    aside = path.with_name(f".{path.name}.stale.{secrets.token_hex(4)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    moved = _read(aside)
    if moved is not None and not is_stale(moved, stale_after):
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)
