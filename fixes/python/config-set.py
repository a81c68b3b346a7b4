# /// script
# [tool.defops]
# name = "config-set"
# version = "0.1.0"
# description = "Set KEY = VALUE in a key = value config file (or in every file a * glob names), keeping comments and order"
# read-write = ["${file:dir}"]
#
# [[tool.defops.param]]
# name = "file"
# description = "the config file, absolute; a * in the file name selects every matching file in that directory"
# required = true
#
# [[tool.defops.param]]
# name = "key"
# description = "the setting to change"
# required = true
#
# [[tool.defops.param]]
# name = "value"
# description = "its new value"
# required = true
# ///
"""config-set: set ``key = value`` in a ``key = value`` style config file.

Params: ``file`` (absolute path; a ``*`` in its last component selects every
matching file in that directory, e.g. ``/etc/app/conf.d/*.conf``), ``key``,
``value``. Keeps comments, order and indentation; changes the first
uncommented ``key = ...`` line or appends one. Not needed when every file
already has that value.

The Python twin of fixes/config-set (Rust): same params, messages and plan.

What the operator can act on (a bad parameter, say) is raised as
``defops.Failure``: reported as its message alone, as the Rust twin's is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import defops

# What Rust's str::trim strips: Unicode's White_Space, spelled out (finding
# them with str.isspace() took 12,289 steps at every start). Python's
# str.strip() also strips the separators \x1c-\x1f; a line starting with
# one of them must not be read differently from the Rust twin.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


@dataclass(frozen=True)
class Params:
    files: list[str]
    key: str
    value: str


def matches(pattern: str, name: str) -> bool:
    """``*`` matches any run of characters; nothing else is special (unlike
    fnmatch, ``?`` and ``[`` are taken literally)."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, name, re.DOTALL) is not None


def expand(file: str) -> list[str]:
    """The files ``file`` names: itself, or the regular files in its
    directory whose names match its last component."""
    directory, _, pattern = file.rpartition("/")
    if "*" not in pattern:
        return [file]
    found = [
        entry.path
        for entry in defops.scandir(directory)
        if entry.is_file() and matches(pattern, entry.name)
    ]
    if not found:
        raise defops.Failure(f"no file matches {file}")
    return found


def params() -> Params:
    p = Params(
        files=expand(defops.require_param("file")),
        key=defops.require_param("key"),
        value=defops.require_param("value"),
    )
    if not p.key.strip(WHITESPACE) or any(ch in p.key for ch in "=\n#"):
        raise defops.Failure(
            f"key {defops.quote(p.key)} must be a plain name (no '=', '#' or newline)"
        )
    if "\n" in p.value:
        raise defops.Failure("value must be one line")
    return p


def lines(text: str) -> list[str]:
    """The lines of ``text`` with their endings (``\\n``, kept), like Rust's
    ``split_inclusive('\\n')``. Only ``\\n`` ends a line: str.splitlines()
    would also split at ``\\r``, ``\\v``, ``\\x1c`` and others."""
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


def find(text: str, key: str) -> tuple[int, str] | None:
    """The index and current value of the first uncommented ``key = value``
    line, or None."""
    for i, piece in enumerate(lines(text)):
        # The line without its ending, "\n" or "\r\n" (Rust's str::lines).
        line = piece[:-1].removesuffix("\r") if piece.endswith("\n") else piece
        t = line.lstrip(WHITESPACE)
        if t.startswith(("#", ";")):
            continue
        k, eq, v = t.partition("=")
        if eq and k.strip(WHITESPACE) == key:
            return i, v.strip(WHITESPACE)
    return None


def set_value(text: str, key: str, value: str) -> str:
    """``text`` with ``key = value`` set, everything else kept as it was."""
    found = find(text, key)
    if found is None:
        if text and not text.endswith("\n"):
            text += "\n"
        return f"{text}{key} = {value}\n"
    at, _ = found
    out = lines(text)
    line = out[at]
    indent = line[: len(line) - len(line.lstrip(WHITESPACE))]
    ending = line[len(line.rstrip("\r\n")) :]
    out[at] = f"{indent}{key} = {value}{ending}"
    return "".join(out)


def check() -> defops.Applicability:
    p = params()
    differ: list[str] = []
    for file in p.files:
        found = find(defops.read_text(file), p.key)
        if found is None:
            differ.append(f"{p.key} is not set in {file}")
        elif found[1] != p.value:
            differ.append(f"{p.key} is {found[1]} in {file}")
    if not differ and len(p.files) == 1:
        return defops.not_needed(f"{p.key} is already {p.value} in {p.files[0]}")
    if not differ:
        return defops.not_needed(
            f"{p.key} is already {p.value} in all {len(p.files)} files"
        )
    if len(differ) == 1:
        return defops.applies(f"{differ[0]}, want {p.value}")
    return defops.applies(
        f"{len(differ)} of {len(p.files)} files need {p.key} = {p.value}"
    )


def apply() -> str:
    p = params()
    for file in p.files:
        text = defops.read_text(file)
        found = find(text, p.key)
        if found is not None and len(p.files) == 1:
            defops.info(f"{file}: {p.key} was {found[1]}")
        # Writing the content a file already has is not a change: files of a
        # glob that are already right count as unchanged.
        defops.write_text(file, set_value(text, p.key, p.value))
    if len(p.files) == 1:
        return f"set {p.key} = {p.value} in {p.files[0]}"
    return f"set {p.key} = {p.value} in {len(p.files)} files"
