# /// script
# [tool.defops]
# name = "stale-locks"
# version = "0.1.0"
# description = "Remove *.lock files older than a given age from one directory"
# read-write = ["${dir}"]
#
# [[tool.defops.param]]
# name = "dir"
# description = "the directory holding the lock files, absolute"
# required = true
#
# [[tool.defops.param]]
# name = "max_age_secs"
# description = "remove lock files older than this many seconds"
# default = "3600"
# ///
"""stale-locks: remove ``*.lock`` files older than a given age.

Params: ``dir`` (absolute path), ``max_age_secs`` (default 3600). Only
regular files directly in ``dir`` are considered (not symlinks, not
subdirectories).

The Python twin of fixes/stale-locks (Rust): same params, messages and plan.

What the operator can act on (a bad parameter, say) is raised as
``defops.Failure``: reported as its message alone, as the Rust twin's is.
"""

from __future__ import annotations

import re
import time

import defops


def int_param(name: str, default: int) -> int:
    """A whole number of at least 0, or ``default`` when not given. Strict
    like the Rust twin's parse: no sign but ``+``, no spaces, no ``_``."""
    value = defops.param(name)
    if value is None:
        return default
    if value == "":
        why = "cannot parse integer from empty string"
    elif not re.fullmatch(r"\+?[0-9]+", value, re.ASCII):
        why = "invalid digit found in string"
    elif int(value) >= 2**64:
        why = "number too large to fit in target type"
    else:
        return int(value)
    raise defops.Failure(f"parameter {name}={quoted(value)}: {why}")


def quoted(text: str) -> str:
    """``text`` in double quotes, control characters escaped: how the Rust
    twin's ``{:?}`` shows it."""
    escapes = {
        "\t": "\\t",
        "\r": "\\r",
        "\n": "\\n",
        "\\": "\\\\",
        '"': '\\"',
        "\0": "\\0",
    }
    out = []
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def stale() -> tuple[str, int, list[str]]:
    """The directory, the age limit, and the lock files older than it."""
    directory = defops.param("dir")
    if directory is None:
        raise defops.Failure("missing parameter: pass --param dir=VALUE")
    max_age = int_param("max_age_secs", 3600)
    now = int(time.time())
    found = []
    for entry in defops.scandir(directory):
        if not entry.is_file() or not entry.name.endswith(".lock"):
            continue
        age = now - defops.stat(entry.path, follow_symlinks=False).st_mtime
        if age > max_age:
            found.append(entry.path)
    return directory, max_age, found


def check() -> defops.Applicability:
    directory, max_age, found = stale()
    if not found:
        return defops.not_needed(
            f"no lock file in {directory} is older than {max_age}s"
        )
    return defops.applies(
        f"{len(found)} lock files in {directory} are older than {max_age}s"
    )


def apply() -> str:
    directory, _, found = stale()
    for path in found:
        defops.info(f"removing {path}")
        defops.remove(path)
    return f"removed {len(found)} stale lock files from {directory}"
