"""Where a `Config` comes from: defaults < TOML file < `HIBIKI_*` environment < command-line flags.

The TOML file has one table per section (`[limits]` with `rate_burst = 10`); environment variables
and flags use the setting's flat name (`HIBIKI_RATE_BURST`, `--rate-burst`), which is unique across
sections. Every source is checked against the `Config` sections: an unknown table or key, a key in
the wrong table, or a value of the wrong type is a `ConfigError` naming the source and the key;
nothing is silently ignored or coerced. `to_toml` prints the effective configuration
(`hibiki config show`), one table per section, with secrets masked.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import tomllib
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from server.config import SECTION_OF, SECTIONS, Config, ConfigError

ENV_PREFIX = "HIBIKI_"
CLIENT_ENV_PREFIX = "HIBIKI_CHAT_"  # reserved for `hibiki chat`: not server settings
MASK = "********"
_SECRET_WORDS = ("password", "secret", "token")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_FILE = "file "


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: Config
    # flat key -> where its value came from ("file PATH", "env HIBIKI_X", "flag"); absent = default.
    sources: dict[str, str]


def load_config(
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """The effective config; `ConfigError` listing every problem, each naming its key and source."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    if path is not None:
        for key, value in _settings_in_file(path, problems):
            _put(key, value, f"{_FILE}{path}", _checked, values, sources, problems)
    for name, text in sorted((env or {}).items()):
        if name.startswith(ENV_PREFIX) and not name.startswith(CLIENT_ENV_PREFIX):
            key = name[len(ENV_PREFIX) :].lower()
            _put(key, text, f"env {name}", _parsed, values, sources, problems)
    for key, value in (flags or {}).items():
        _put(key, value, "flag", _checked, values, sources, problems)
    if not problems:
        try:
            return LoadedConfig(Config.from_flat(**values), sources)
        except ConfigError as exc:
            problems = exc.problems
    raise ConfigError([(_where(key, sources), msg) for key, msg in problems])


def to_toml(loaded: LoadedConfig) -> str:
    """The config as a TOML document (secrets masked), each non-default value's source noted."""
    lines = [
        "# hibiki effective configuration: defaults < --config file < HIBIKI_* env < flags.",
        "# Secrets are masked.",
    ]
    for name in SECTIONS:
        section = getattr(loaded.config, name)
        lines += ["", f"[{name}]"]
        for f in dataclasses.fields(section):
            value = mask_secret(f.name, getattr(section, f.name))
            source = loaded.sources.get(f.name)
            note = f"  # {source}" if source else ""
            if f.name == "server_id" and source is None:
                note = "  # default: random at each start unless set"
            lines.append(f"{f.name} = {_toml_value(value)}{note}")
    return "\n".join(lines) + "\n"


# Reading -------------------------------------------------------------------------------------


@functools.cache
def _field_types() -> dict[str, Any]:
    """Flat setting name -> its type."""
    out = {}
    for section in SECTIONS.values():
        hints = typing.get_type_hints(section)
        out.update({f.name: hints[f.name] for f in dataclasses.fields(section)})
    return out


def _settings_in_file(path: str, problems: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    """(flat key, value) of each setting in the file's tables; misplaced keys go to `problems`."""
    out = []
    where = f"{_FILE}{path}"
    for table, content in _read_toml(path, problems).items():
        if table not in SECTIONS:
            problems.append((f"{where}: {table}", _misplaced(table, content)))
        elif not isinstance(content, dict):
            problems.append(
                (f"{where}: {table}", f"expected a table, got {_describe_value(content)}")
            )
        else:
            for key, value in content.items():
                if SECTION_OF.get(key) == table:
                    out.append((key, value))
                else:
                    problems.append((f"{where}: {table}.{key}", _not_in_table(table, key)))
    return out


def _misplaced(name: str, content: Any) -> str:
    """What is wrong with a top-level `name` that is not a section's table."""
    if name in SECTION_OF:
        return f"not a top-level setting (put it under [{SECTION_OF[name]}])"
    if isinstance(content, dict):
        return "unknown table" + _did_you_mean(difflib.get_close_matches(name, SECTIONS, n=1))
    hint = difflib.get_close_matches(name, SECTION_OF, n=1)
    return "unknown setting" + _did_you_mean([f"{SECTION_OF[h]}.{h}" for h in hint])


def _not_in_table(table: str, key: str) -> str:
    if key in SECTION_OF:
        return f"not a [{table}] setting (it is in [{SECTION_OF[key]}])"
    here = [f.name for f in dataclasses.fields(SECTIONS[table])]
    hint = difflib.get_close_matches(key, here, n=1)
    if not hint:
        hint = [f"{SECTION_OF[h]}.{h}" for h in difflib.get_close_matches(key, SECTION_OF, n=1)]
    return "unknown setting" + _did_you_mean(hint)


def _read_toml(path: str, problems: list[tuple[str, str]]) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        problems.append((f"file {path}", f"cannot read it: {exc.strerror or exc}"))
    except tomllib.TOMLDecodeError as exc:
        problems.append((f"file {path}", f"not valid TOML: {exc}"))
    return {}


def _put(
    key: str,
    raw: Any,
    source: str,
    convert: Callable[[Any, Any], Any],
    values: dict[str, Any],
    sources: dict[str, str],
    problems: list[tuple[str, str]],
) -> None:
    types = _field_types()
    if key not in types:
        hint = difflib.get_close_matches(key, types, n=1)
        problems.append((f"{source}: {key}", "unknown setting" + _did_you_mean(hint)))
        return
    try:
        values[key] = convert(raw, types[key])
    except ValueError as exc:
        problems.append((_named(key, source), str(exc)))
        return
    sources[key] = source


def _did_you_mean(hint: list[str]) -> str:
    return f" (did you mean {hint[0]}?)" if hint else ""


def _where(key: str, sources: dict[str, str]) -> str:
    source = sources.get(key)
    return _named(key, source) if source else key


def _named(key: str, source: str) -> str:
    """`key` as its source spells it: `file PATH: limits.rate_burst`, `env HIBIKI_X: x`."""
    if source.startswith(_FILE) and key in SECTION_OF:
        return f"{source}: {SECTION_OF[key]}.{key}"
    return f"{source}: {key}"


def _checked(value: Any, typ: Any) -> Any:
    """A typed value (TOML, flags) that must already be of the field's type."""
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _finite(float(value))
    elif typ is str:
        if isinstance(value, str):
            return value
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"expected {_describe(typ)}, got {_describe_value(value)}")


def _parsed(text: str, typ: Any) -> Any:
    """An environment variable's text, parsed as the field's type."""
    stripped = text.strip()
    if typ is bool:
        if stripped.lower() in _TRUE:
            return True
        if stripped.lower() in _FALSE:
            return False
    elif typ is int:
        try:
            return int(stripped)
        except ValueError:
            pass
    elif typ is float:
        try:
            number = float(stripped)
        except ValueError:
            pass
        else:
            return _finite(number)
    elif typ is str:
        return text
    else:  # tuple[str, ...]: comma-separated
        return tuple(part.strip() for part in text.split(",") if part.strip())
    raise ValueError(f"expected {_describe(typ)}, got {text!r}")


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")
    return value


def _describe(typ: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(typ, "a list of strings")


def _describe_value(value: Any) -> str:
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "table"}
    kind = kinds.get(type(value), "list" if isinstance(value, list | tuple) else "value")
    return f"{kind} {value!r}"


# Writing -------------------------------------------------------------------------------------


def mask_secret(key: str, value: Any) -> Any:
    """Hide secrets: a string setting named like one, and the password in any URL's userinfo."""
    if isinstance(value, tuple):
        return tuple(mask_secret(key, v) for v in value)
    if not isinstance(value, str):
        return value
    if value and any(word in key for word in _SECRET_WORDS):
        return MASK
    return _mask_url_password(value)


def _mask_url_password(text: str) -> str:
    try:
        parts = urllib.parse.urlsplit(text)
        password = parts.password
    except ValueError:
        return text
    if not password:
        return text
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string: same escapes, control characters escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"
