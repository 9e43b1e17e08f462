"""Options: the one parser of every option set (model, calibration, evaluation, method configs).

An option set is a frozen keyword-only dataclass whose fields are declared with `option`, which
keeps the field's help and a number's bounds. `parse` builds one from Python values, TOML values
or command-line strings, converting each by its field's type; an unknown key is an
`UnknownOptionError` (an `UnknownNameError` with a did-you-mean). A class checks its own values
once, in ``__post_init__`` (the `Options` base's makes the type, choice and bound checks
every class shares), raising `OptionError`, which names the key, so a suite can say
``tasks[0].limit: must be ...`` and the Python API ``limit must be ...``. `click_options` turns
the fields into command-line options and `describe` into rows for listings and docs, so no
option is declared twice.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from locator.errors import LocatorError, UnknownNameError

T = TypeVar("T")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str = "",
    flag: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
) -> Any:
    """A dataclass field with a `help` text (for ``--help``, listings, docs and the error of a
    missing required field); `flag` is its command-line flag where it is not ``--`` and the
    name with dashes; a number field's values must be >= `minimum`, <= `maximum`, > `above`
    and < `below` where given (`Options` checks them)."""
    given = {"minimum": minimum, "above": above, "maximum": maximum, "below": below}
    bounds = {key: value for key, value in given.items() if value is not None}
    return dataclasses.field(
        default=default, metadata={"help": help, "flag": flag, "bounds": bounds}
    )


class OptionError(LocatorError):
    """A bad value of option `key`; `problem` says what is wrong, in words that follow the key
    (``must be ...``). The message is `message` when given, else the key and the problem."""

    def __init__(self, key: str, problem: str, message: str | None = None) -> None:
        super().__init__(message or f"{key} {problem}")
        self.key, self.problem = key, problem


class UnknownOptionError(UnknownNameError, OptionError):
    """A key, or a value of option `key`, that is not among the valid choices (did-you-mean)."""

    def __init__(self, key: str, kind: str, name: str, choices: Iterable[str]) -> None:
        unknown = UnknownNameError(kind, name, choices)
        message = str(unknown)
        problem = message[0].lower() + message[1:].replace(" Installed: ", " Valid: ")
        OptionError.__init__(self, key, problem, message)  # UnknownNameError's takes others
        self.kind, self.name, self.choices = unknown.kind, unknown.name, unknown.choices


def check_choice(key: str, value: Any, choices: Iterable[str], kind: str) -> None:
    """Raise an `UnknownOptionError` unless `value` is one of `choices`."""
    choices = list(choices)
    if value not in choices:
        raise UnknownOptionError(key, kind, str(value), choices)


_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a non-empty string"}
_BOUNDS: dict[str, tuple[str, Callable[[Any, Any], bool]]] = {
    "minimum": (">=", operator.ge),
    "maximum": ("<=", operator.le),
    "above": (">", operator.gt),
    "below": ("<", operator.lt),
}


def _expected(kind: Any, bounds: Mapping[str, float] | None = None) -> str:
    """What a value of type `kind` must be, in words: ``a positive integer or None``."""
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return repr(arguments[0]) if len(arguments) == 1 else f"one of {list(arguments)}"
    if origin in (Union, types.UnionType):
        words = [_expected(a, bounds) for a in arguments if a is not type(None)]
        return " or ".join(words + ["None"] * (type(None) in arguments))
    if origin is tuple:
        return f"a list, each {_expected(arguments[0])}"
    if kind is int and bounds == {"minimum": 1}:
        return "a positive integer"
    name = _WORDS.get(kind, getattr(kind, "__name__", str(kind)))
    if kind in (int, float) and bounds:
        name += " " + " and ".join(f"{_BOUNDS[key][0]} {value}" for key, value in bounds.items())
    return name


def convert(
    kind: Any, value: Any, *, text: bool = False, bounds: Mapping[str, float] | None = None
) -> Any:
    """`value` as a value of type `kind` (a number within `bounds`, named as `option`'s
    arguments: ``{"minimum": 0, "below": 1}``), or a `ValueError` saying what it must be. With
    `text`, strings are parsed (``"4"`` -> 4, ``"true"``, ``"none"``); without, a value must
    already have the type (a TOML or Python value), but an int is a float."""
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        for choice in arguments:
            if value == choice or (text and isinstance(value, str) and value == str(choice)):
                return choice
    elif origin in (Union, types.UnionType):
        if value is None or (text and isinstance(value, str) and value.lower() == "none"):
            if type(None) in arguments:
                return None
        for argument in arguments:
            try:
                return convert(argument, value, text=text, bounds=bounds)
            except ValueError:
                pass
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(convert(arguments[0], item, text=text) for item in value)
    elif kind is bool:
        if isinstance(value, bool):
            return value
        if text and isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
    elif kind in (int, float):
        number = None
        if text and isinstance(value, str):
            try:
                number = kind(value)
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            # an int is a float; a float is an int only when written as text ("-o steps 4.0")
            if kind is float or isinstance(value, int) or (text and float(value).is_integer()):
                number = kind(value)
        within = (_BOUNDS[key][1](number, bound) for key, bound in (bounds or {}).items())
        if number is not None and all(within):
            return number
    elif kind in (str, Path):
        if isinstance(value, (str, Path)) and str(value) and (kind is Path or type(value) is str):
            return kind(value)
    elif kind is Any or not isinstance(kind, type) or isinstance(value, kind):
        return value
    raise ValueError(f"must be {_expected(kind, bounds)}, got {value!r}.")


class Options:
    """The base of an option class (a frozen keyword-only dataclass of `option` fields); a
    subclass that checks more calls ``super().__post_init__()`` first."""

    def __post_init__(self) -> None:
        """Check every field against its type, choices and bounds (an `OptionError` naming the
        first bad one) and store it converted (a float field given an int holds a float)."""
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):  # type: ignore[arg-type]  # a dataclass subclass
            value, bounds = getattr(self, field.name), field.metadata.get("bounds")
            try:
                value = convert(hints[field.name], value, bounds=bounds)
            except ValueError as error:
                raise OptionError(field.name, str(error)) from None
            object.__setattr__(self, field.name, value)


def parse(
    cls: type[T],
    values: Mapping[str, Any],
    where: str = "",
    *,
    text: bool = False,
    kind: str = "option",
) -> T:
    """Build option class `cls` from `values`, converted by each field's type (strings parsed
    with `text`) and checked by the class. Errors are one line: an unknown key is an
    `UnknownOptionError` ("Unknown `kind` ..."), a bad value an `OptionError`, a missing one
    too (``path missing: <its help>``); with `where` (the place the values come from,
    ``"suite.toml: tasks[0]."``), they become ``"<where><key>: <problem>"``."""
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    try:
        for key in values:
            check_choice(key, key, fields, kind)
        for key, field in fields.items():
            if key not in values and field.default is field.default_factory is dataclasses.MISSING:
                what = field.metadata.get("help", "").rstrip(".") or "a value"
                raise OptionError(key, f"missing: {what}.")
        converted = {}
        for key, value in values.items():
            try:
                bounds = fields[key].metadata.get("bounds")
                converted[key] = convert(hints[key], value, text=text, bounds=bounds)
            except ValueError as error:
                raise OptionError(key, str(error)) from None
        return cls(**converted)
    except OptionError as error:
        if not where:
            raise
        raise LocatorError(f"{where}{error.key}: {error.problem}") from None


def describe(cls: type) -> list[dict[str, Any]]:
    """The fields of an option class as rows: name, type (what a value must be, in words),
    required, default (None when required), help and flag (where it is not the name's), for
    listings (``locator localizers``) and the documentation's tables (``docs/hooks/options.py``)."""
    hints = typing.get_type_hints(cls)
    return [
        {
            "name": field.name,
            "type": _expected(hints[field.name], field.metadata.get("bounds")),
            "required": field.default is dataclasses.MISSING,
            "default": None if field.default is dataclasses.MISSING else field.default,
            "help": field.metadata.get("help", ""),
            "flag": field.metadata.get("flag"),
        }
        for field in dataclasses.fields(cls)
    ]


def click_options(
    cls: type, into: str, *, skip: Iterable[str] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator that declares one click option per field of option class `cls` (flag, help
    and default from the field; fields in `skip` are declared by the command) and hands the
    command one `cls` built by `parse` from their values, as argument `into`."""
    import click

    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    options = []
    for field in sorted(
        fields, key=lambda f: f.default is not dataclasses.MISSING
    ):  # required first
        if field.name in skip:
            continue
        kind, default = hints[field.name], field.default
        flag = field.metadata.get("flag") or f"--{field.name.replace('_', '-')}"
        settings: dict[str, Any] = {"help": field.metadata.get("help") or None}
        if kind is bool:
            settings["is_flag"] = True
        elif typing.get_origin(kind) is tuple:
            settings["multiple"] = True
        else:
            # An int, float or str (or None) is click's own type; other values come as text.
            plain = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
            settings["type"] = plain[0] if len(plain) == 1 and plain[0] in (int, float) else str
            settings["default"] = None if default is dataclasses.MISSING else default
            settings["show_default"] = default not in (None, dataclasses.MISSING)
        settings["required"] = default is dataclasses.MISSING
        options.append(click.option(flag, field.name, **settings))

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def build(**kwargs: Any) -> Any:
            given = {f.name: kwargs.pop(f.name) for f in fields if f.name in kwargs}
            values = {key: value for key, value in given.items() if value is not None}
            return command(**{into: parse(cls, values, text=True)}, **kwargs)

        for declare in reversed(options):
            build = declare(build)
        return build

    return decorate
