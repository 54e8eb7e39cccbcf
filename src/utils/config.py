"""Typed configs: YAML files filled into dataclasses, strictly.

Each component declares its own ``@dataclass`` config beside its code; a stage's top-level
config nests them. ``load_config(Cls, path, ["a.b=v"])`` reads the YAML, applies ``--set``
overrides, and checks every key and type: an unknown key or a value of the wrong type is a
:class:`ConfigError` naming the dotted key and the file.

Presets are overlays (as mt3's gin overlays): a file may start from another with ``base: other.yaml``
(relative to itself) and change only what differs; mappings merge key by key, anything else is
replaced. The preset's name is written once, as ``preset:``; every ``{preset}`` in a string value
becomes it (after overrides, so ``--set preset=small`` moves every path).

    python -m src.utils.config FILE [KEY]     # the resolved YAML, or one top-level value
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from src.utils.io import write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and the file."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, src: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert nested dataclasses."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, src)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{src}: '{key}' has an invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{src}: '{key}' must be a mapping, got {value!r}")
        return _from_dict(tp, value, src, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{src}: '{key}' must be a list, got {value!r}")
        (item_tp,) = args or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]", src) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{src}: '{key}' must be a mapping, got {value!r}")
        k_tp, v_tp = args or (Any, Any)
        return {_coerce(k, k_tp, f"{key}.{k}", src): _coerce(v, v_tp, f"{key}.{k}", src) for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{src}: '{key}' must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{key}[{i}]", src) for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{src}: '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{src}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{src}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{src}: '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"{src}: '{key}' has unsupported type {_type_name(tp)}")


def _from_dict(cls: type[T], data: dict[str, Any], src: str, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            full = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(f"{src}: unknown key '{full}' (valid: {', '.join(sorted(names))})")
    kwargs = {}
    for k, v in data.items():
        full = f"{prefix}.{k}" if prefix else k
        kwargs[k] = _coerce(v, hints[k], full, src)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{src}: {prefix or cls.__name__}: {e}") from None
    return obj


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def interpolate(value: Any, preset: str) -> Any:
    """Every ``{preset}`` in the strings of ``value`` replaced by ``preset``."""
    if isinstance(value, str):
        return value.replace("{preset}", preset)
    if isinstance(value, dict):
        return {k: interpolate(v, preset) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, preset) for v in value]
    return value


def read_yaml(path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a mapping, its ``base:`` chain merged under it (no overrides, no interpolation)."""
    p = Path(path)
    if not p.is_file():
        where = f" (the base of {seen[-1]})" if seen else ""
        raise ConfigError(f"{path}: config file not found{where}")
    if p.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}".splitlines()[0]) from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    data = loaded or {}
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a file name, got {base!r}")
    return merge(read_yaml(p.parent / base, (*seen, p.resolve())), data)


def resolve(data: dict[str, Any], overrides: list[str] | None = None) -> dict[str, Any]:
    """Apply ``--set`` overrides, then put the preset's name into every ``{preset}``."""
    data = apply_overrides(data, overrides or [])
    preset = data.get("preset")
    return interpolate(data, str(preset)) if preset is not None else data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'a.b=3'`` -> (['a', 'b'], 3); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set: expected section.key=value, got {text!r}")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set: invalid key in {text!r}")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text}: '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return data


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Read ``path`` (YAML, with its ``base:`` chain) into ``cls``, apply ``--set`` overrides and the
    preset's name, validate everything."""
    src = str(path) if path is not None else "<defaults>"
    data = read_yaml(path) if path is not None else {}
    if overrides:
        src = f"{src} (with --set)"
    return _from_dict(cls, resolve(data, overrides), src)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config next to a stage's artefacts (atomically)."""
    write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def add_config_args(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument("--config", default=default, help="YAML config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config value (repeatable)",
    )


def main(argv: list[str] | None = None) -> int:
    """Print a config file resolved (bases merged, preset filled in), or one of its top-level values."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        print("usage: python -m src.utils.config FILE [KEY]", file=sys.stderr)
        return 2
    try:
        data = resolve(read_yaml(args[0]))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len(args) == 1:
        print(yaml.safe_dump(data, sort_keys=False), end="")
    elif args[1] not in data:
        print(f"error: {args[0]}: no top-level key '{args[1]}'", file=sys.stderr)
        return 2
    else:
        print(data[args[1]])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
