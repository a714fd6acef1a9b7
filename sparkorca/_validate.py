"""Argument checks shared by every public entry point. Each raises
InvalidArgumentError naming the parameter, the bad value and what is accepted."""

from __future__ import annotations

import numbers
from typing import Any, Iterable, Literal, Mapping, Optional, overload

from .errors import InvalidArgumentError


@overload
def integer(name: str, value: Any, minimum: int = ...,
            allow_none: Literal[False] = ...) -> int: ...
@overload
def integer(name: str, value: Any, minimum: int = ..., allow_none: bool = ...) -> Optional[int]: ...
def integer(name: str, value: Any, minimum: int = 1, allow_none: bool = False) -> Optional[int]:
    """An int >= ``minimum`` (bools refused), or None when ``allow_none``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        accepted = ("a positive integer" if minimum == 1 else f"an integer >= {minimum}")
        raise InvalidArgumentError(name, value, accepted + (" or None" if allow_none else ""))
    return int(value)


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentError(name, value, "True or False")
    return value


def seconds(name: str, value: Any, allow_forever: bool = False, allow_zero: bool = False) -> float:
    """A duration in seconds > 0 (>= 0 with ``allow_zero``; -1, no limit, with
    ``allow_forever``)."""
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and (float(value) > 0 or (allow_zero and value == 0) or (allow_forever and value == -1)))
    if not ok:
        accepted = f"a number of seconds {'>=' if allow_zero else '>'} 0"
        raise InvalidArgumentError(name, value,
                                   accepted + (" (or -1: no limit)" if allow_forever else ""))
    return float(value)


def one_of(name: str, value: Any, choices: Iterable[Any], hint: Optional[str] = None) -> Any:
    choices = list(choices)
    if value not in choices:
        raise InvalidArgumentError(name, value, f"one of {', '.join(map(str, choices))}",
                                   hint=hint)
    return value


def str_dict(name: str, value: Any) -> dict:
    """A dict with str keys (None: empty)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidArgumentError(name, value, "a dict with str keys")
    return dict(value)


def non_empty_str(name: str, value: Any, allow_none: bool = True) -> Optional[str]:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(name, value, "a non-empty str" + (" or None" if allow_none
                                                                     else ""))
    return value
