"""The one typed-config engine: settings dataclasses -> YAML files, `--set` overrides, CLI flags.

A command's settings are one dataclass whose fields carry their documentation
(`field(default=..., metadata={"help": "..."})`, as TRL's configs do). From that one definition
this module builds the object from a YAML mapping (strict: an unknown key is an error naming the
valid ones), applies `--set key.sub=value` overrides, and generates the command's flags, so no
second list of defaults exists to drift from the dataclass.

Field metadata understood here:
  help     the flag's help text (a field without help gets no flag); a function of the class
           where the text names class constants (a default that depends on the mode, say)
  flag     the flag's name when it differs from the field's (`lr` for `learning_rate`), so one
           idea has one flag in every command
  aliases  older spellings still accepted but hidden from --help
  short    a one-letter form shown beside the flag (`-k` for `--top-k`)
  choices  the valid values
  metavar  the flag's placeholder in --help when the type's own (N, X, TEXT, A,B,...) says too little
  repeat   a list field whose flag is given once per item (`--classification-data A --classification-data B`)
           instead of as one comma-separated value
  nargs    a list field whose flag takes several words (`--merge PART PART`)
  min      the smallest valid value of a number (an error naming the flag below it)

On the command line a list is comma-separated (`--lrs 1e-4,3e-4`) and a table `key=value` pairs
(`--task-steps retrieval=150,classification=60`; a table of lists separates items by "/":
`--task-lrs retrieval=1e-3/3e-4`).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from twinlm.errors import UserError


def build(cls: type, data: Any, where: str = "", what: str = "recipe") -> Any:
    """Dataclass `cls` from a mapping, refusing keys it does not declare; values coerced to the field types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where or what} must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise UserError(f"unknown {what} key {name!r}; valid keys here: {', '.join(fields)}")
        kwargs[key] = _at_least(fields[key], coerce(hints[key], value, name, what), name)
    return cls(**kwargs)


def _at_least(f: dataclasses.Field, value: Any, name: str) -> Any:
    """`value`, or a UserError naming `name` when it is below the field's `min`."""
    low = f.metadata.get("min")
    if low is not None and value is not None and value < low:
        raise UserError(f"{name} must be >= {low}, got {value}")
    return value


def coerce(hint: Any, value: Any, where: str, what: str = "recipe") -> Any:
    """`value` as type `hint` (strings from the command line or YAML included); UserError naming `where`."""
    origin, args = get_origin(hint), get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where, what)
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        if not isinstance(value, list):
            raise UserError(f"{where} must be a list")
        return [build(args[0], v, f"{where}[{i}]", what) for i, v in enumerate(value)]
    if value is None:
        if type(None) in args:
            return None
        raise UserError(f"{where} may not be empty")
    base = [a for a in args if a is not type(None)] if args and origin not in (list, tuple, dict) else []
    target = base[0] if len(base) == 1 else hint
    if target is not hint:  # X | None with a value: an X
        return coerce(target, value, where, what)
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping of key: value")
        return {str(k): coerce(args[1], v, f"{where}.{k}", what) if args else v for k, v in value.items()}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any length
        items = list(value) if isinstance(value, list | tuple) else [value]
        return tuple(coerce(args[0], v, f"{where}[{i}]", what) for i, v in enumerate(items))
    if target is tuple or origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise UserError(f"{where} must be a list of {len(args)} numbers")
        return tuple(float(v) for v in value)
    if origin is list:
        items = list(value) if isinstance(value, list | tuple) else [value]
        return [coerce(args[0], v, f"{where}[{i}]", what) for i, v in enumerate(items)] if args else items
    if target is Path:
        return Path(value)
    try:
        if target is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if target is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(float(value)) if isinstance(value, str) else int(value)
        if target is float:
            return float(value)
        if target is str:
            return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}={value!r} is not a valid {getattr(target, '__name__', target)}") from None
    return value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ["a.b=1", "c=x"] into a nested dict; values parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--set expects key.sub=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw  # not a YAML scalar (e.g. a lone "*"): the text itself
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {key}: {part} is not a section")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], over: dict[str, Any], where: str = "") -> dict[str, Any]:
    """`over` laid onto `base`, section by section. An item of a list of sections (a recipe's
    phases, say) is addressed by its `name` or its index: `phases.decay.tokens=...`."""
    out = dict(base)
    for key, value in over.items():
        here = f"{where}.{key}" if where else str(key)
        current = out.get(key)
        if isinstance(value, dict) and isinstance(current, list) and all(isinstance(i, dict) for i in current):
            items = [dict(i) for i in current]
            for name, sub in value.items():
                idx = _item_index(items, name, here)
                items[idx] = merge(items[idx], sub, f"{here}.{name}") if isinstance(sub, dict) else sub
            out[key] = items
        elif isinstance(value, dict) and isinstance(current, dict):
            out[key] = merge(current, value, here)
        else:
            out[key] = value
    return out


def _item_index(items: list[dict], name: Any, where: str) -> int:
    for i, item in enumerate(items):
        if str(item.get("name")) == str(name) or str(i) == str(name):
            return i
    valid = [str(item.get("name", i)) for i, item in enumerate(items)]
    singular = where.rsplit(".", 1)[-1].removesuffix("s")
    raise UserError(f"--set {where}.{name}: no such {singular}; {where} are {', '.join(valid)}")


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML settings file ({} when empty); invalid YAML is a one-line error."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def load(cls: type, data: dict[str, Any] | None, overrides: list[str] | None = None, what: str = "recipe") -> Any:
    """`cls` from a mapping with `--set` overrides laid on top."""
    return build(cls, merge(data or {}, parse_overrides(overrides or [])), "", what)


def to_dict(obj: Any) -> dict[str, Any]:
    """A settings dataclass as plain YAML-ready data (tuples become lists)."""
    return _plain(dataclasses.asdict(obj))


def dump(obj: Any, path: str | Path) -> None:
    """Write a settings dataclass as YAML that `build` reads back into the same object."""
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --- command-line flags generated from a settings dataclass ---------------------------------


def flag_of(f: dataclasses.Field) -> str:
    return "--" + f.metadata.get("flag", f.name).replace("_", "-")


def add_flags(parser: argparse.ArgumentParser, cls: type, only: tuple[str, ...] | None = None,
              default_from: str | None = None, defaults: dict[str, Any] | None = None) -> None:
    """One flag per documented field of `cls` (a field without metadata help has none), or per
    field named in `only`. Defaults are not copied into argparse: an absent flag leaves the
    dataclass default in charge, or, where a file supplies the values, `default_from` names it
    in the help instead of the dataclass default. `defaults` are a command's own defaults for
    some fields (shown in --help; the command lays them under `given`)."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata or (only is not None and f.name not in only):
            continue
        hint, flag = hints[f.name], flag_of(f)
        names = [f.metadata["short"], flag] if "short" in f.metadata else [flag]
        text = f.metadata["help"]
        text = (text(cls) if callable(text) else text).replace("%", "%%")  # argparse formats help with %
        default = (defaults or {}).get(f.name, _default(f))
        if default_from:
            text, default = f"{text} (default: {default_from})", None
        if _is_bool(hint):
            if default is True:
                parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                                    default=argparse.SUPPRESS, help=f"{text} (default: on)")
            else:
                parser.add_argument(*names, dest=f.name, action="store_true", default=argparse.SUPPRESS, help=text)
            continue
        if default not in (None, [], (), {}) and "(default" not in text:
            text = f"{text} (default: {_shown(default)})"
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=text,
                      metavar=f.metadata.get("metavar", _metavar(hint)))
        if f.metadata.get("repeat"):
            kwargs["action"] = "append"
        if f.metadata.get("nargs"):
            kwargs["nargs"] = f.metadata["nargs"]
        if f.metadata.get("choices"):
            kwargs["choices"] = list(f.metadata["choices"])
            kwargs.pop("metavar")
        parser.add_argument(*names, **kwargs)
        for alias in f.metadata.get("aliases", ()):
            parser.add_argument("--" + alias, dest=f.name, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                                **{k: v for k, v in kwargs.items() if k in ("action", "nargs")})


def given(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of `cls` whose flags (made by `add_flags`) were given, as typed values; a bad
    value is a one-line UserError naming the flag."""
    hints = get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if "help" in f.metadata and f.name in vars(args):  # a flag add_flags made, not a namesake
            flag, value = flag_of(f), getattr(args, f.name)
            if _is_table(hints[f.name]) and isinstance(value, str | list):
                many = _is_list(_table_values(hints[f.name]))
                value = {k: v for item in ([value] if isinstance(value, str) else value)
                         for k, v in _table(item, flag, f, many).items()}
            elif _is_list(hints[f.name]) and isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            values[f.name] = _at_least(f, coerce(hints[f.name], value, flag, "setting"), flag)
    return values


def from_flags(cls: type, args: argparse.Namespace, **fixed: Any) -> Any:
    """`cls` from the flags `add_flags` made (values given on the command line) and `fixed`."""
    return cls(**{**given(cls, args), **fixed})


def _table(text: str, flag: str, f: dataclasses.Field, many: bool) -> dict[str, Any]:
    """{"retrieval": "150"} from "retrieval=150" (items of a list value separated by "/")."""
    out: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            example = f.metadata.get("metavar", "KEY=VALUE,...")
            raise UserError(f"{flag} takes KEY=VALUE pairs such as {example}, got {part!r}")
        out[key.strip()] = [v for v in value.split("/") if v.strip()] if many else value.strip()
    return out


def _shown(default: Any) -> str:
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, list | tuple):
        return ",".join(_shown(v) for v in default)
    if isinstance(default, dict):
        return ",".join(f"{k}={_shown(v).replace(',', '/')}" for k, v in default.items())
    return str(default)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _is_bool(hint: Any) -> bool:
    return hint is bool or (get_origin(hint) is not None and set(get_args(hint)) == {bool, type(None)})


def _is_list(hint: Any) -> bool:
    def listy(h: Any) -> bool:
        return get_origin(h) is list or (get_origin(h) is tuple and Ellipsis in get_args(h))
    return listy(hint) or (get_origin(hint) is not dict and any(listy(a) for a in get_args(hint)))


def _is_table(hint: Any) -> bool:
    return get_origin(hint) is dict or any(get_origin(a) is dict for a in get_args(hint))


def _table_values(hint: Any) -> Any:
    table = hint if get_origin(hint) is dict else next(a for a in get_args(hint) if get_origin(a) is dict)
    args = get_args(table)
    return args[1] if args else Any


def _metavar(hint: Any) -> str:
    args = [a for a in get_args(hint) if a is not type(None)] or [hint]
    target = args[0]
    if _is_table(hint):
        return "KEY=VALUE,..."
    if _is_list(hint):
        return "A,B,..."
    return {int: "N", float: "X", str: "TEXT", Path: "PATH"}.get(target, "VALUE")
