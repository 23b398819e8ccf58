"""YAML config files: one file's settings with its `base:` chain (`read_config_file`), what `config.load_config`
reads before it applies the command line's overrides.

A file may start from another, `base: FILE`, a YAML file relative to the file's own folder (itself read this way):
the file's values override the base's, section by section, as each row of configs/paper/ does over
configs/paper/_base.yaml. Each file's keys and types are checked under its own name (`config.check_keys`, passed
in: this module knows no config keys), so an error names the file that holds it; a missing base and a cycle of
bases are ConfigErrors naming the file. Also the one reader of the `noise.snr_db: from RUN` syntax (`snr_source`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cycleseg.errors import ConfigError

__all__ = ["BASE", "SNR_FROM", "read_config_file", "snr_source"]

BASE = "base"  # the file directive `base: FILE`: start from FILE's values (not a config key)


Check = Callable[[dict[str, Any], str], None]  # (one file's settings, the file's name): ConfigError or nothing


SNR_FROM = "from "  # noise.snr_db: from RUN, the SNR measured for another run (cycleseg calibrate)


def snr_source(value: Any) -> str | None:
    """RUN of a `noise.snr_db: from RUN` value (of a loaded config, a YAML file or an override); None for a
    number, None or any other value. The one reader of that syntax: validation, the sweep's plan and
    calibrate's resolve_snr_from all ask it."""
    if isinstance(value, str) and value.startswith(SNR_FROM):
        return value[len(SNR_FROM):].strip() or None
    return None


def read_config_file(path: str | Path, check: Check | None = None) -> dict[str, Any]:
    """The settings of a YAML config file as a nested dict: the file's own over those of its `base:` (a YAML file
    relative to the file's folder, itself read this way), merged section by section. Each file's keys and types
    are checked by `check` under its own name; a missing base and a cycle of bases are ConfigErrors naming the file."""
    return _read_with_bases(Path(path), (), check)


def _read_with_bases(path: Path, chain: tuple[Path, ...], check: Check | None) -> dict[str, Any]:
    raw = _read_yaml(path)
    base = raw.pop(BASE, None)
    if check is not None:
        check(raw, str(path))  # unknown keys and wrong types, named by this file
    if base is None:
        return raw
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: base must name a YAML file (relative to {path.parent}), got {base!r}", key=BASE)
    base_path = path.parent / base
    if not base_path.is_file():
        raise ConfigError(f"{path}: base {base!r}: {base_path} not found; name a YAML file relative to {path.parent}",
                          key=BASE)
    here = chain + (path.resolve(),)
    if base_path.resolve() in here:
        cycle = " -> ".join(str(p) for p in (*here, base_path.resolve()))
        raise ConfigError(f"{path}: base {base!r} makes a cycle ({cycle}); one of these files must not have a base",
                          key=BASE)
    return _merge(_read_with_bases(base_path, here, check), raw)


def _merge(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """`own` over `base`: sections merged key by key, any other value replaced."""
    merged = dict(base)
    for key, value in own.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    """One YAML config file as a dict; ConfigError with the file (and line and column) for anything unreadable."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; see configs/ for examples")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or _first_line(e)
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix the file at that line and column") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid YAML ({_first_line(e)}); fix or recreate the file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config ({e.strerror or e}); check the file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {type(raw).__name__}")
    return raw


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
