"""How a setting is declared once and read: :func:`setting` makes a dataclass field that
carries its environment variable, default, bounds and one line of doc; :func:`read` fills a
class of such fields from an environment. Knows no setting itself: the engine's are in
:mod:`app.core.settings`, the business's in ``handlers/settings.py``."""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Declared:
    """How one setting is read; its type is its field's annotation (str, int, float, bool,
    Path, tuple of strings), or what ``parse`` returns."""

    env: str
    #: The value when the variable is unset or empty, or a function of the values declared
    #: before this one (``lambda s: 4 * s["max_params_bytes"]``).
    default: Any
    doc: str
    minimum: float | None = None  # numbers below it are refused (default 0); defaults are not
    choices: tuple[str, ...] = ()  # the values allowed, compared in lower case
    parse: Callable[[str], Any] | None = None  # text -> value; a ValueError says why not
    blank_is_value: bool = False  # an empty variable is a value, not "unset"


def setting(env: str, default: Any = None, *, doc: str, minimum: float | None = None,
            choices: tuple[str, ...] = (), parse: Callable[[str], Any] | None = None,
            secret: bool = False, blank_is_value: bool = False) -> Any:
    """A field of a settings dataclass, read from the variable ``env``. A ``secret`` never
    shows when the settings are printed."""
    return field(repr=not secret, metadata={"setting": Declared(
        env, default, doc, minimum, choices, parse, blank_is_value)})


def declarations(cls: type) -> dict[str, Declared]:
    """Field name -> how it is read, in declaration order."""
    return {f.name: f.metadata["setting"] for f in fields(cls) if "setting" in f.metadata}


class Malformed(ValueError):
    """A variable's value is refused; the message names the variable and says why."""


def read(cls: type[T], env: Mapping[str, str]) -> T:
    """``cls`` with its declared settings read from ``env``, in declaration order (a default
    may use the values before it). A ``given`` field, where ``cls`` has one, gets the variables
    that were set (not empty). Raises :class:`Malformed` naming the first bad variable."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    given = set()
    for name, declared in declarations(cls).items():
        kind, var, raw = _kind(hints[name]), declared.env, env.get(declared.env)
        if raw:
            given.add(var)
        if raw or (raw == "" and declared.blank_is_value):
            try:
                value = _convert(declared, kind, raw)
            except ValueError as refused:
                raise Malformed(f"{var}={raw!r} {refused}") from None
            floor = declared.minimum if declared.minimum is not None else 0
            if kind in (int, float) and value < floor:
                raise Malformed(f"{var}={value} is below the minimum of {kind(floor)}")
        elif callable(declared.default):
            value = declared.default(values)
        else:
            value = copy.copy(declared.default)
        if kind is Path:
            value = Path(value).expanduser().absolute()
        if declared.choices and value not in declared.choices:
            raise Malformed(f"{var}={value!r} must be one of {', '.join(declared.choices)}")
        values[name] = value
    # ``cls`` is a dataclass (every caller's is), which a plain type[T] cannot say to mypy.
    if "given" in {f.name for f in fields(cls)}:  # type: ignore[arg-type]
        values["given"] = frozenset(given)
    return cls(**values)


def _kind(hint: Any) -> Any:
    """``str | None`` -> ``str``; other annotations as they are."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return hint


def _convert(declared: Declared, kind: Any, raw: str) -> Any:
    if declared.parse is not None:
        return declared.parse(raw)
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return raw.lower() in ("1", "true", "yes", "on")
        raise ValueError("is not a boolean (use true or false)")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise ValueError("is not an integer" if kind is int else "is not a number") from None
    if typing.get_origin(kind) is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw.lower() if declared.choices else raw
