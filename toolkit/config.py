"""Typed run configs: dataclasses filled from YAML files or packaged presets, with ``key=value`` overrides.

Packaged presets live in ``toolkit/configs/<system>_<name>.yaml`` (e.g. ``sof_quick``); a config argument
is either such a name (``quick``) or a path to a YAML file. Unknown keys are errors that list the valid
ones, so a typo never silently falls back to a default (the original's configs had keys train.py never read).

Every value is checked once, here (:func:`check_values`), by its field's type annotation and the range
its class declares with :func:`declare_checks` (e.g. ``lr=above(0)``); nested mappings (``loss``,
``model_overrides``, ``synthetic``, ...) are checked against the dataclass or function they feed, and
their unknown keys are named too. A bad value raises :class:`ConfigError` naming the config, the key (or
the ``--set`` override it came from), the value and what is allowed, e.g.
``sof config quick: --set lr=abc: expected a number > 0``.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from toolkit.io import DataError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads exponent floats without a dot (``3e-3``) as numbers, as YAML 1.2 does."""


# YAML 1.1 (PyYAML) reads "3e-3" as a string, which would reach an optimizer as a learning rate.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def packaged_configs(system: str) -> list[str]:
    """Names of the packaged presets of a system (``sof`` or ``oflow``)."""
    return sorted(p.stem[len(system) + 1:] for p in CONFIG_DIR.glob(f"{system}_*.yaml"))


class ConfigError(ValueError):
    """A bad config key or value (or a bad ``--set``): the message names the key, the value and what is
    allowed. The command line exits 2 on it (a usage error, unlike bad data)."""


class ConfigDict(dict):
    """The dict :func:`load_config_dict` returns; ``sources`` maps dotted keys set by overrides to the
    ``--set key=value`` text they came from, so that errors can quote it."""

    sources: dict[str, str]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sources = {}


def load_config_dict(system: str, name_or_path: str | os.PathLike, overrides: Sequence[str] = ()) -> ConfigDict:
    """Read a YAML config (packaged preset name or file) and apply ``key=value`` overrides (values parsed as YAML).

    Raises:
        ConfigError: unknown preset name, an override without ``=``, or one that descends into a non-mapping.
        DataError: the file is missing, unreadable or not a YAML mapping.
    """
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{system}_{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown {system} config {str(name_or_path)!r}; packaged: {packaged_configs(system)} "
                              "(or give a YAML file path)")
    if not path.is_file():
        raise DataError(path, "config file not found")
    try:
        data = _yaml(path.read_text()) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot be read ({exc})") from exc
    except yaml.YAMLError as exc:
        raise DataError(path, f"invalid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(path, f"expected a mapping of config keys, found {type(data).__name__}")
    return apply_overrides(data, overrides)


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> ConfigDict:
    """A copy of a config mapping with ``key=value`` overrides applied (dotted keys reach into nested mappings;
    values parsed as YAML); each override is remembered as the source of its key for error messages.

    Raises:
        ConfigError: an override without ``=``, with an empty key, or one that descends into a non-mapping.
    """
    sources = dict(getattr(data, "sources", {}))
    data = ConfigDict(copy.deepcopy(dict(data)))
    data.sources.update(sources)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected key=value (e.g. --set max_steps=100)")
        key, value = item.split("=", 1)
        *parents, leaf = key.strip().split(".")
        if not all(k.strip() for k in (*parents, leaf)):
            raise ConfigError(f"--set {item}: empty key; expected key=value (e.g. --set max_steps=100)")
        target = data
        for i, p in enumerate(parents):
            if target.get(p) is None:  # absent or null (e.g. `synthetic: null`): start a mapping
                target[p] = {}
            target = target[p]
            if not isinstance(target, dict):
                raise ConfigError(f"--set {item}: {'.'.join(parents[:i + 1])} is not a mapping "
                                  f"({target!r}); nothing to set inside it")
        # YAML reads "lr=" as null; a value that is not YAML (e.g. "[1") stays the string it is
        try:
            target[leaf] = _yaml(value)
        except yaml.YAMLError:
            target[leaf] = value
        data.sources[key.strip()] = f"--set {item}"
    return data


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build a dataclass from a dict, checking every value (:func:`check_values`) first.

    Raises:
        ConfigError: an unknown key (the valid ones listed), or a value of the wrong type or range.
    """
    sources = getattr(data, "sources", {})
    values = check_values(cls, data, where, sources)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # checks that relate several fields
        raise ConfigError(f"{where}: {exc}") from exc


# ---------------------------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Rule:
    """What a field allows beyond its type: a test and how it reads in messages (``">= 1"``)."""

    test: Callable[[Any], bool]
    text: str
    replaces_type: bool = False
    """The text names the allowed values completely (``one of [...]``)."""

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False


def at_least(n: float) -> Rule:
    return Rule(lambda v: v >= n, f">= {n}")


def above(x: float) -> Rule:
    return Rule(lambda v: v > x, f"> {x}")


def within(lo: float, hi: float, *, open_low: bool = False, open_high: bool = False) -> Rule:
    """lo <= v <= hi, with open ends where asked (written like ``in (0, 1]``)."""
    return Rule(lambda v: (v > lo if open_low else v >= lo) and (v < hi if open_high else v <= hi),
                f"in {'(' if open_low else '['}{lo}, {hi}{')' if open_high else ']'}")


def one_of(*choices: Any) -> Rule:
    choices = tuple(choices[0]) if len(choices) == 1 and not isinstance(choices[0], str) else choices
    return Rule(lambda v: v in choices, f"one of the valid values {list(choices)}", replaces_type=True)


def matches(pattern: str, text: str) -> Rule:
    regex = re.compile(pattern)
    return Rule(lambda v: regex.fullmatch(v) is not None, text)


def non_empty() -> Rule:
    return Rule(lambda v: len(v.strip()) > 0 if isinstance(v, str) else len(v) > 0, "(not empty)")


def each(rule: Rule) -> Rule:
    """Every item of a list satisfies ``rule``."""
    return Rule(lambda v: all(rule(x) for x in v), f"(each {rule.text})")


DEVICE = matches(r"auto|cpu|mps|cuda(:\d+)?", '("auto", "cpu", "cuda" or "cuda:N")')
"""The ``device`` rule of the run configs."""


@dataclass(frozen=True)
class Nested:
    """A mapping whose keys are the fields of dataclass ``cls`` (minus ``exclude``); each value is
    checked by its field's annotation and ``rules`` (plus ``cls``'s declared checks), then ``cls`` is
    built from them to run its own checks."""

    cls: type
    exclude: tuple[str, ...] = ()
    rules: Mapping[str, Rule] = dataclasses.field(default_factory=dict)
    label: str = "key"
    """what a key is called in the unknown-key message (e.g. "ODE option")"""
    construct: bool = True
    """build ``cls`` from the checked values (False where they are overrides of a preset, not a whole config)"""

    def names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.cls) if f.init and f.name not in self.exclude]

    def hints(self) -> dict[str, Any]:
        return typing.get_type_hints(self.cls)

    def all_rules(self) -> Mapping[str, Rule]:
        return {**_DECLARED.get(self.cls, {}), **self.rules}

    def build(self, values: dict[str, Any]) -> None:
        if self.construct:
            self.cls(**values)


@dataclass(frozen=True)
class Kwargs(Nested):
    """A mapping of keyword arguments of function ``cls`` (minus ``exclude``), checked by their annotations."""

    def names(self) -> list[str]:
        return [n for n, p in inspect.signature(self.cls).parameters.items()
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in self.exclude]

    def hints(self) -> dict[str, Any]:
        try:
            return typing.get_type_hints(self.cls)
        except NameError:  # an annotation only importable for type checkers: check these values by rules only
            return {}

    def all_rules(self) -> Mapping[str, Rule]:
        return self.rules

    def build(self, values: dict[str, Any]) -> None:
        pass


def nested(cls: type, *, exclude: Sequence[str] = (), label: str = "key", construct: bool = True,
           **rules: Rule) -> Nested:
    """Rule of a mapping field whose keys are the fields of dataclass ``cls`` (``construct=False`` for
    overrides of a preset, which need not make a valid ``cls`` on their own)."""
    return Nested(cls, tuple(exclude), rules, label, construct)


def kwargs_of(func: Callable, *, exclude: Sequence[str] = (), **rules: Rule) -> Kwargs:
    """Rule of a mapping field whose keys are keyword arguments of ``func``."""
    return Kwargs(func, tuple(exclude), rules)


_DECLARED: dict[type, dict[str, Rule | Nested]] = {}


def declare_checks(cls: type, **rules: Rule | Nested) -> None:
    """Declare the allowed values of a config dataclass's fields (beyond their annotated types).

    :func:`from_dict` and :func:`check_fields` apply them; fields without a rule are checked by type only.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(rules) - names)
    if unknown:
        raise TypeError(f"declare_checks({cls.__name__}): no fields {unknown}")
    _DECLARED[cls] = dict(rules)


def check_values(cls: type, data: Mapping[str, Any], where: str,
                 sources: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Check a dict of field values of dataclass ``cls``; returns them converted (ints, floats).

    Args:
        cls: the config dataclass.
        data: field name -> value (only the keys present are checked).
        where: how the config is named in messages (``"sof config quick"``).
        sources: dotted key -> the ``--set`` text that set it (quoted instead of the key).
    Raises:
        ConfigError: an unknown key or a bad value, naming it and what is allowed.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of config keys, found {type(data).__name__}")
    return _check_mapping(Nested(cls, (), {}), data, where, "", dict(sources or {}), build=False)


def check_fields(obj: Any) -> None:
    """Check (and convert in place) every field of a config dataclass instance, e.g. in ``__post_init__``."""
    cls = type(obj)
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls) if f.init}
    for name, value in check_values(cls, values, cls.__name__).items():
        if value is not values[name]:
            object.__setattr__(obj, name, value)


def _check_mapping(spec: Nested, data: Mapping[str, Any], where: str, prefix: str, sources: dict[str, str],
                   build: bool) -> dict[str, Any]:
    names = spec.names()
    unknown = [k for k in data if k not in names]
    if unknown:
        what = f"in {prefix.rstrip('.')}" if prefix else "keys"
        src = dict.fromkeys(_source(f"{prefix}{k}", sources) for k in unknown) if sources else {}
        srcs = f" ({', '.join(x for x in src if x)})" if any(src) else ""
        label = f"unknown {spec.label} {unknown[0]!r} {what}" if prefix and len(unknown) == 1 else \
            f"unknown {'keys' if not prefix else spec.label + 's ' + what} {sorted(map(str, unknown))}"
        raise ConfigError(f"{where}: {label}{srcs}; valid: {sorted(names)}")
    hints, rules = spec.hints(), spec.all_rules()
    out = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        out[key] = _check_value(value, hints.get(key, Any), rules.get(key), where, path, sources)
    if build:
        try:
            spec.build(out)
        except (TypeError, ValueError) as exc:
            src = [v for k, v in sources.items() if k.startswith(prefix) or k == prefix.rstrip(".")]
            srcs = f" ({', '.join(src)})" if src else ""
            raise ConfigError(f"{where}: {prefix.rstrip('.')}{srcs}: {exc}") from exc
    return out


def _check_value(value: Any, hint: Any, rule: Rule | Nested | None, where: str, path: str,
                 sources: dict[str, str]) -> Any:
    options = _union(hint)
    if value is None:
        if type(None) in options or hint is Any:
            return None
        raise ConfigError(f"{where}: {_quote(path, sources, value)}: expected {_describe(options, rule)}")
    converted = _convert(value, [o for o in options if o is not type(None)])
    if converted is _BAD:
        raise ConfigError(f"{where}: {_quote(path, sources, value)}: expected {_describe(options, rule)}")
    if isinstance(rule, Nested):
        if not isinstance(converted, Mapping):
            raise ConfigError(f"{where}: {_quote(path, sources, value)}: expected a mapping of "
                              f"{rule.cls.__name__} keys")
        return _check_mapping(rule, converted, where, f"{path}.", sources, build=True)
    if rule is not None and not rule(converted):
        raise ConfigError(f"{where}: {_quote(path, sources, value)}: expected {_describe(options, rule)}")
    return converted


_BAD = object()


def _convert(value: Any, options: list[Any]) -> Any:
    """``value`` as one of the annotated types (ints from integral floats, floats from numeric strings), or _BAD."""
    if not options or Any in options:
        return value
    for t in options:
        origin = typing.get_origin(t) or t
        if origin is bool:
            if isinstance(value, bool):
                return value
        elif origin is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and math.isfinite(value) and value == int(value):
                return int(value)
        elif origin is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value) if math.isfinite(value) else _BAD
            if isinstance(value, str):  # YAML 1.1 reads "3e-3" as a string
                try:
                    number = float(value)
                except ValueError:
                    continue
                if math.isfinite(number) and re.fullmatch(r"[-+]?[0-9.]+(e[-+]?[0-9]+)?", value.strip().lower()):
                    return number
        elif origin is str:
            if isinstance(value, str):
                return value
        elif origin in (dict, Mapping) or (isinstance(origin, type) and issubclass(origin, Mapping)):
            if isinstance(value, Mapping):
                return dict(value)
        elif origin in (list, tuple, Sequence):
            if isinstance(value, (list, tuple)):
                args = [a for a in typing.get_args(t) if a is not Ellipsis]
                if not args:
                    return list(value) if origin is list else value
                items = [_convert(v, [args[min(i, len(args) - 1)]]) for i, v in enumerate(value)]
                if all(x is not _BAD for x in items):
                    return type(value)(items)  # a YAML list stays a list (it is stored as one)
        elif isinstance(origin, type):
            if isinstance(value, origin):
                return value
        else:
            return value
    return _BAD


def _union(hint: Any) -> list[Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return list(typing.get_args(hint))
    return [hint]


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
               list: "a list", tuple: "a list"}


def _describe(options: list[Any], rule: Rule | Nested | None) -> str:
    if isinstance(rule, Rule) and rule.replaces_type:
        text = rule.text
    else:
        names = []
        for t in options:
            if t is type(None):
                continue
            origin = typing.get_origin(t) or t
            name = _TYPE_NAMES.get(origin, getattr(origin, "__name__", str(origin)))
            if origin is list and typing.get_args(t):
                item = typing.get_args(t)[0]
                name = f"a list of {_TYPE_NAMES.get(item, getattr(item, '__name__', str(item)))[2:]}s"
            names.append(name)
        text = " or ".join(dict.fromkeys(names)) or "a value"
        if isinstance(rule, Rule):
            text = f"{text} {rule.text}"
    return f"null or {text}" if type(None) in options else text


def _source(path: str, sources: Mapping[str, str]) -> str | None:
    """The ``--set`` text that set ``path`` or one of its parents."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        if src := sources.get(".".join(parts[:i])):
            return src
    return None


def _quote(path: str, sources: Mapping[str, str], value: Any = ...) -> str:
    """The ``--set`` text that set ``path`` (or one of its parents), else ``path = value``."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        src = sources.get(".".join(parts[:i]))
        if src:
            return src if i == len(parts) else f"{path} (from {src})"
    return path if value is ... else f"{path} = {value!r}"
