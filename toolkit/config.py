"""Typed run configs: dataclasses filled from YAML files or packaged presets, with ``key=value`` overrides.

Packaged presets live in ``toolkit/configs/<system>_<name>.yaml`` (e.g. ``sof_quick``); a config argument
is either such a name (``quick``) or a path to a YAML file. Unknown keys are errors that list the valid
ones, so a typo never silently falls back to a default (the original's configs had keys train.py never read).
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
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


def load_config_dict(system: str, name_or_path: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a YAML config (packaged preset name or file) and apply ``key=value`` overrides (values parsed as YAML)."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{system}_{name_or_path}.yaml"
        if not path.exists():
            raise ValueError(f"unknown {system} config {str(name_or_path)!r}; packaged: {packaged_configs(system)} "
                             "(or give a YAML file path)")
    if not path.is_file():
        raise DataError(path, "config file not found")
    try:
        data = _yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(path, f"invalid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(path, f"expected a mapping of config keys, found {type(data).__name__}")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must be key=value")
        key, value = item.split("=", 1)
        target = data
        *parents, leaf = key.strip().split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = _yaml(value)
    return data


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build a dataclass from a dict, rejecting unknown keys with the list of valid ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid: {sorted(names)}")
    return cls(**data)
