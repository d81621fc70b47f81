"""Reading raw dataset files (COCO-Stuff, Visual Genome) with errors a user can act on.

Raw annotation files are large and written by others; when one is not what we expect, the
user needs one line naming the file and what is wrong in it, not a traceback from deep in
the preparation. Everything here raises :class:`RawFormatError` (a ValueError, which the
CLI prints as one ``error:`` line).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


class RawFormatError(ValueError):
    """A raw input file (or folder) that is missing or not in the expected format."""


def require_dir(path: str | Path, what: str) -> Path:
    """``path`` as a Path, or RawFormatError naming the missing folder."""
    path = Path(path)
    if not path.is_dir():
        kind = "is a file, not a folder" if path.exists() else "folder not found"
        raise RawFormatError(f"{path}: {kind} ({what})")
    return path


def read_json(path: str | Path) -> Any:
    """The parsed file; a missing, binary or invalid file names itself and the position."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise RawFormatError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise RawFormatError(f"{path}: not a text file") from None
    except json.JSONDecodeError as e:
        # A truncated download ends with "Expecting value" at the very end of the file.
        raise RawFormatError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}, "
            f"character {e.pos})"
        ) from None


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:5])
        return f"an object with keys {keys}" if keys else "an empty object"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return type(value).__name__


def _at(path: Path, where: str) -> str:
    return f"{path}: {where}: " if where else f"{path}: "


def expect_list(data: Any, path: Path, what: str, where: str = "") -> list:
    if not isinstance(data, list):
        raise RawFormatError(f"{_at(path, where)}expected {what}, got {_describe(data)}")
    return data


def expect_dict(
    data: Any, path: Path, what: str, keys: tuple[str, ...] = (), where: str = ""
) -> dict:
    if not isinstance(data, dict):
        raise RawFormatError(f"{_at(path, where)}expected {what}, got {_describe(data)}")
    missing = [k for k in keys if k not in data]
    if missing:
        names = ", ".join(repr(k) for k in missing)
        raise RawFormatError(f"{_at(path, where)}expected {what}; missing key(s) {names}")
    return data


@contextlib.contextmanager
def entry(path: Path, where: str) -> Iterator[None]:
    """Turn a KeyError / TypeError / ValueError raised while reading one entry of a raw file
    into one line that names the file and the entry (``objects.json: [12].objects[3]: ...``)."""
    try:
        yield
    except RawFormatError:
        raise
    except KeyError as e:
        raise RawFormatError(f"{path}: {where}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError, IndexError, ArithmeticError) as e:
        raise RawFormatError(f"{path}: {where}: unexpected value ({e})") from None


# ----------------------------------------------------------------------------- reports


def compare_counts(got: Mapping[str, int], published: Mapping[str, int]) -> list[str]:
    """One line per key: ours, the published number and the difference."""
    lines = []
    for key, want in published.items():
        have = got.get(key)
        if have is None:
            continue
        diff = have - want
        verdict = "same" if diff == 0 else f"differs by {diff:+,} ({diff / want:+.1%})"
        lines.append(f"  {key:<22s} {have:>9,}  published {want:>9,}  {verdict}")
    return lines


# ----------------------------------------------------------------------------- options


def read_options(path: str | Path, allowed: Mapping[str, type]) -> dict[str, Any]:
    """Preparation options from a TOML or JSON file: keys are the parameter names
    (``min_image_size``; ``min-image-size`` too), values checked against ``allowed``."""
    path = Path(path)
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RawFormatError(f"{path}: file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise RawFormatError(f"{path}: not valid TOML ({e})") from None
    else:
        data = read_json(path)
    expect_dict(data, path, "an object of preparation options")
    options: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RawFormatError(f"{path}: {raw_key}: unknown option{hint}")
        options[key] = check_type(value, allowed[key], f"{path}: {raw_key}")
    return options


def check_type(value: Any, kind: type, where: str) -> Any:
    # bool is an int in Python: a true/false where a number is meant is a mistake.
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise RawFormatError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value
