"""Writing files so that nothing half-written is ever seen, and checking outputs before work.

Every file locator writes goes through `atomic_write`: the bytes go to a hidden temporary file
with a unique name in the same folder, are flushed to disk (fsync) and moved into place with
`os.replace`, which is atomic on one file system. A reader, a resumed run, or a run killed by
SIGINT or a full disk sees the old file or the new one, never a part; the temporary file is
removed on any exception. A model folder is written the same way as a whole by
`atomic_directory`, which also records what it wrote (`WRITTEN`: every file's size and SHA-256),
so that a later ``--force`` replaces a folder only when it still holds exactly those files.
`check_output_file` and `check_output_directory` find an output that cannot be written, or that
holds someone else's data, before any computation.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from locator.errors import LocatorError


def _temporary(path: Path) -> Path:
    """A unique hidden name beside `path` (pid and random: shards may write the same file)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _error(path: Path, error: OSError) -> LocatorError:
    """A one-line error for a failed write of `path`, with what to do about it."""
    reason = error.strerror or type(error).__name__
    if error.errno == errno.ENOSPC:
        fix = "free some space or write elsewhere"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a folder you can write to"
    else:
        fix = "choose another output path"
    return LocatorError(f"cannot write {str(path)!r}: {reason}; {fix}.")


def _remove(path: Path) -> None:
    """Remove a file if it is there; never raise (this runs while another error propagates)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _existing_folder(folder: Path, path: Path) -> Path:
    """The nearest existing folder at or above `folder`; a file in the way is an error."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    if not folder.is_dir():
        raise LocatorError(
            f"cannot write {str(path)!r}: {str(folder)!r} is a file, not a folder; "
            "choose another output path."
        )
    return folder


def _sync_directory(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: not every file system allows it)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write `data` (text is UTF-8) to `path` atomically and durably; return the path.

    A failure (full disk, no permission, SIGINT) leaves `path` as it was, no temporary file
    behind, and becomes a one-line `LocatorError` naming the file.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    _existing_folder(path.parent, path)
    temporary = _temporary(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "xb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise _error(path, error) from None
    finally:
        _remove(temporary)
    _sync_directory(path.parent)
    return path


WRITTEN = ".locator-written.json"
"""The file `atomic_directory` leaves in each folder it writes: the relative path, size and
SHA-256 of every other file in it, the proof that `--force` may replace the folder."""


def _files(folder: Path) -> dict[str, Path]:
    """Every file below `folder` by its relative POSIX path, but the record itself."""
    return {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if not path.is_dir() and path.name != WRITTEN
    }


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_written(folder: Path) -> None:
    """Write `WRITTEN` for the files now in `folder`."""
    record = {name: [path.stat().st_size, sha256_of(path)] for name, path in _files(folder).items()}
    atomic_write(folder / WRITTEN, json.dumps(record, indent=1, sort_keys=True))


def foreign_files(folder: str | Path) -> list[str]:
    """The files of `folder` that `atomic_directory` cannot prove it wrote there: everything
    when its record is missing or unreadable, else each file added, changed or missing (a
    missing one by its name too: a record copied from another folder proves nothing)."""
    folder = Path(folder)
    found = _files(folder)
    try:
        record = json.loads((folder / WRITTEN).read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError(record)
    except (OSError, ValueError):
        return list(found) or [WRITTEN]
    foreign = []
    for name in sorted(set(found) | set(record)):
        path, expected = found.get(name), record.get(name)
        if (
            path is None
            or not isinstance(expected, list)
            or path.stat().st_size != expected[0]
            or sha256_of(path) != expected[1]
        ):
            foreign.append(name)
    return foreign


def atomic_directory(
    path: str | Path, write: Callable[[Path], object], *, replace: bool = False
) -> Path:
    """Fill a new folder with ``write(temporary_folder)`` and move it to `path` in one rename.

    `path` must not exist, or be empty, unless `replace` (then the old folder is removed only
    after the new one is in place; `check_output_directory` with `force` has checked that it
    holds only what an earlier call wrote). The folder records its files in `WRITTEN`. On any
    failure the temporary folder is removed and `path` is untouched.
    """
    path = Path(path)
    _existing_folder(path.parent, path)
    temporary = _temporary(path)
    old = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.mkdir()
        write(temporary)
        _record_written(temporary)
        if path.exists() and (replace or not any(path.iterdir())):
            old = _temporary(path)
            path.rename(old)
        temporary.rename(path)  # fails if `path` exists: nothing is overwritten unasked
    except OSError as error:
        if old is not None and not path.exists():
            old.rename(path)  # put the old folder back
            old = None
        raise _error(path, error) from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    _sync_directory(path.parent)
    return path


def _writable_folder(path: Path) -> None:
    """Raise unless files can be created in `path` or in the nearest folder above it."""
    probe = _temporary(_existing_folder(path, path) / "probe")
    try:
        probe.touch(exist_ok=False)
    except OSError as error:
        raise _error(path, error) from None
    finally:
        _remove(probe)


def check_output_file(path: str | Path, *, overwrite: Callable[[Path], bool] | None = None) -> Path:
    """Check, before any work, that the file `path` can be written.

    An existing folder at `path` is refused; an existing file is refused unless `overwrite`
    says it may be replaced (for example: it is a file of the same kind that locator wrote).
    """
    path = Path(path)
    if path.is_dir():
        raise LocatorError(f"output {str(path)!r} is a folder; give a file name.")
    if path.exists() and (overwrite is None or not overwrite(path)):
        raise LocatorError(
            f"output {str(path)!r} exists and is not a file locator wrote; "
            "choose a new file name (locator never overwrites other files)."
        )
    _writable_folder(path.parent)
    return path


def check_output_directory(
    path: str | Path,
    *,
    owned: Callable[[Path], bool],
    what: str,
    force: bool = False,
    extend: bool = False,
) -> Path:
    """Check, before any work, that the folder `path` can be written without losing data.

    It may be missing or empty. A non-empty folder must be ``owned(path)`` (locator wrote it
    as `what`, which names it with its article): then it is extended (`extend`, as a results
    folder is) or, with `force`, replaced, but only while it holds exactly the files
    `atomic_directory` recorded writing there (`foreign_files`): a file added or changed by
    anyone else, or a marker copied from another folder, is refused, so no command deletes
    what it did not write.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LocatorError(f"output {str(path)!r} is a file, not a folder; choose a folder.")
    if path.is_dir() and any(path.iterdir()):
        if not owned(path):
            raise LocatorError(
                f"output folder {str(path)!r} is not empty and was not written by locator as "
                f"{what}; choose a new folder (locator never overwrites other folders)."
            )
        if not (force or extend):
            raise LocatorError(
                f"output folder {str(path)!r} already holds {what}; pass --force to replace "
                "it, or choose a new folder."
            )
        foreign = [] if extend else foreign_files(path)
        if foreign:
            listed = ", ".join(foreign[:3]) + (
                f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            )
            raise LocatorError(
                f"output folder {str(path)!r} holds files locator did not write there or that "
                f"changed since ({listed}); --force replaces only what locator wrote: move them "
                "away or choose a new folder."
            )
    _writable_folder(path)
    return path


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of `path`; a file that is not UTF-8 is a one-line `LocatorError` naming
    the file, the line, the column and the offending byte (not a `UnicodeDecodeError`)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise LocatorError(
            f"{what} {str(path)!r} is not UTF-8 text: byte 0x{data[error.start]:02x} at line "
            f"{line}, column {column} (byte offset {error.start}); save it as UTF-8."
        ) from None
