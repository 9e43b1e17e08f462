"""The one error hierarchy of locator.

Every problem a user can cause (an unknown name, a bad option, a file that does not match the
model) raises a `LocatorError` whose message is one line naming what is wrong and what would be
right. The CLI prints that line and exits with code 2; no traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LocatorError(Exception):
    """A problem with the user's input or environment, stated in one line."""


class UnknownNameError(LocatorError, KeyError):
    """A name (method, dataset, task, config key) that is not among the valid choices."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]) -> None:
        choices = sorted(choices)
        message = f"Unknown {kind} {name!r}."
        close = difflib.get_close_matches(name, choices, n=1)
        if close:
            message += f" Did you mean {close[0]!r}?"
        message += f" Installed: {', '.join(choices) if choices else '(none)'}."
        super().__init__(message)
        self.kind, self.name, self.choices = kind, name, choices

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


class LocatorWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints one line)."""
