"""locator.io: atomic files and folders, and output checks before any work."""

import errno
import os
import shutil
from pathlib import Path

import pytest

from locator.errors import LocatorError
from locator.io import (
    WRITTEN,
    atomic_directory,
    atomic_write,
    check_output_directory,
    check_output_file,
    read_text,
)


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write(path, "one")
    atomic_write(path, b"two")
    assert path.read_text() == "two" and _names(path.parent) == ["a.json"]


@pytest.mark.parametrize(
    "error, words",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device; free"),
        (PermissionError(errno.EACCES, "Permission denied"), "Permission denied; choose"),
    ],
)
def test_a_failed_write_is_one_line_naming_the_file_and_keeps_the_old_one(
    tmp_path, monkeypatch, error, words
):
    path = tmp_path / "a.txt"
    atomic_write(path, "old")

    def fail(descriptor):
        raise error

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(LocatorError) as raised:
        atomic_write(path, "new")
    message = str(raised.value)
    assert str(path) in message and words in message and "\n" not in message
    assert path.read_text() == "old" and _names(tmp_path) == ["a.txt"]


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    atomic_write(path, "old")

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, "new")
    assert path.read_text() == "old" and _names(tmp_path) == ["a.txt"]


def test_writing_under_a_file_is_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(LocatorError, match="is a file, not a folder"):
        atomic_write(tmp_path / "f" / "a.txt", "x")
    assert _names(tmp_path) == ["f"]


def test_atomic_directory_appears_whole_and_replaces_only_when_asked(tmp_path):
    out = tmp_path / "model"
    atomic_directory(out, lambda folder: (folder / "w").write_text("1"))
    assert (out / "w").read_text() == "1"
    with pytest.raises(LocatorError):
        atomic_directory(out, lambda folder: (folder / "w").write_text("2"))
    assert (out / "w").read_text() == "1"
    atomic_directory(out, lambda folder: (folder / "w").write_text("3"), replace=True)
    assert (out / "w").read_text() == "3" and _names(tmp_path) == ["model"]

    def broken(folder):
        (folder / "half").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_directory(out, broken, replace=True)
    assert _names(out) == [WRITTEN, "w"] and _names(tmp_path) == ["model"]


def test_output_checks_refuse_foreign_data_and_need_force_for_own(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x").write_text("mine")
    owned = atomic_directory(tmp_path / "owned", lambda t: (t / "marker").write_text(""))
    mine = lambda p: (p / "marker").is_file()  # noqa: E731
    for force in (False, True):
        with pytest.raises(LocatorError, match="was not written by locator"):
            check_output_directory(foreign, owned=mine, what="model", force=force)
    with pytest.raises(LocatorError, match="pass --force"):
        check_output_directory(owned, owned=mine, what="model")
    check_output_directory(owned, owned=mine, what="model", force=True)
    check_output_directory(owned, owned=mine, what="results", extend=True)
    check_output_directory(tmp_path / "new" / "deeper", owned=mine, what="model")
    with pytest.raises(LocatorError, match="exists and is not a file locator wrote"):
        check_output_file(foreign / "x")
    check_output_file(foreign / "x", overwrite=lambda p: True)
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        WRITTEN,
        "foreign",
        "marker",
        "owned",
        "x",
    ]


def test_force_replaces_only_a_folder_holding_exactly_what_locator_wrote(tmp_path):
    mine = lambda p: (p / "marker").is_file()  # noqa: E731

    def written(name: str) -> Path:
        def write(folder: Path) -> None:
            (folder / "marker").write_text("")
            (folder / "sub").mkdir()
            (folder / "sub" / "weights").write_bytes(b"0123")

        return atomic_directory(tmp_path / name, write)

    check_output_directory(written("clean"), owned=mine, what="a model", force=True)
    added = written("added")
    (added / "notes.txt").write_text("the user's")
    changed = written("changed")
    (changed / "sub" / "weights").write_bytes(b"3210")
    copied = tmp_path / "copied"
    copied.mkdir()
    (copied / "marker").write_text("")
    (copied / "thesis.tex").write_text("the user's")
    shutil.copy(written("source") / WRITTEN, copied / WRITTEN)  # a record copied over
    garbled = written("garbled")
    (garbled / WRITTEN).write_text("[")
    for folder, named in [
        (added, "notes.txt"),
        (changed, "sub/weights"),
        (copied, "thesis.tex"),
        (garbled, "marker"),
    ]:
        with pytest.raises(LocatorError, match=f"did not write.*{named}.*move them away"):
            check_output_directory(folder, owned=mine, what="a model", force=True)
    assert (added / "notes.txt").read_text() == "the user's"


def test_text_that_is_not_utf8_is_one_line_naming_the_place(tmp_path):
    path = tmp_path / "suite.toml"
    path.write_bytes("name = 'ok'\nx = 'caf\xe9'\n".encode("latin-1"))
    with pytest.raises(
        LocatorError, match=r"suite '.*suite.toml' is not UTF-8.*0xe9 at line 2, column 9"
    ):
        read_text(path, "suite")
    path.write_text("naïve\n", encoding="utf-8")
    assert read_text(path) == "naïve\n"
