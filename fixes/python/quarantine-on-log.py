# /// script
# [tool.defops]
# name = "quarantine-on-log"
# version = "0.1.0"
# description = "When the logs report corrupt segments often enough, move those segment files out of the data directory"
# read-write = ["${data_dir}", "${quarantine_dir:dir}"]
# read-only = ["${leader_file:dir}"]
# logs = ["${log}"]
#
# [[tool.defops.param]]
# name = "log"
# description = "a glob of the logs to read, e.g. /var/log/db/db.log*"
# required = true
#
# [[tool.defops.param]]
# name = "data_dir"
# description = "the directory holding the segments"
# required = true
#
# [[tool.defops.param]]
# name = "quarantine_dir"
# description = "where segments are moved (created if missing)"
# required = true
#
# [[tool.defops.param]]
# name = "threshold"
# description = "how many matching lines it takes"
# default = "1"
#
# [[tool.defops.param]]
# name = "pattern"
# description = "the regex of a bad line; its first group names the segment"
# default = "checksum mismatch in segment (\\S+)"
#
# [[tool.defops.param]]
# name = "leader_file"
# description = "if given, act only where this file says leader"
# ///
"""quarantine-on-log: when the logs report corrupt segments often enough,
move those segment files out of the data directory.

Params: ``log`` (a glob, e.g. ``/var/log/db/db.log*``), ``data_dir``,
``quarantine_dir``, ``threshold`` (default 1), ``pattern`` (default
``checksum mismatch in segment (\\S+)``; its first group names the segment),
``leader_file`` (optional: then only where that file says ``leader``).
Applies when at least ``threshold`` lines match and a named segment is still
in ``data_dir``; moves each such segment into ``quarantine_dir`` (created if
missing). Segments already moved are skipped, so it is idempotent.

The Python twin of fixes/quarantine-on-log (Rust): same params, messages and
plan.

What the operator can act on (a bad parameter, say) is raised as
``defops.Failure``: reported as its message alone, as the Rust twin's is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import defops

DEFAULT_PATTERN = r"checksum mismatch in segment (\S+)"

# What Rust's str::trim strips (Unicode White_Space). Python's str.strip()
# also strips the separators \x1c-\x1f; the twin must not.
WHITESPACE = "".join(
    ch
    for ch in map(chr, range(0x3001))
    if ch.isspace() and ch not in "\x1c\x1d\x1e\x1f"
)


@dataclass(frozen=True)
class Plan:
    quarantine_dir: str
    data_dir: str
    # Segments named by the logs that are still in the data directory.
    pending: list[str]
    named: int
    lines: int
    threshold: int


def required(name: str) -> str:
    """A parameter the fix cannot do without (the manifest requires it)."""
    value = defops.param(name)
    if value is None:
        raise defops.Failure(f"missing parameter: pass --param {name}=VALUE")
    return value


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


def not_leader() -> str | None:
    """Why the fix does not apply on this host, if it does not."""
    file = defops.param("leader_file")
    if file is None:
        return None
    role = defops.read_text(file).strip(WHITESPACE)
    if role != "leader":
        return f"{file} says {quoted(role)}, not leader"
    return None


def plan() -> Plan:
    log = required("log")
    data_dir = required("data_dir")
    quarantine_dir = required("quarantine_dir")
    threshold = int_param("threshold", 1)
    pattern = defops.param("pattern", DEFAULT_PATTERN)
    hits = defops.grep(log, pattern, max=10_000)
    named: set[str] = set()
    for m in hits.matches:
        segment = m.captures[0] if m.captures else None
        if segment is None:
            continue
        # A segment is a file name in data_dir, never a path.
        if segment in ("", ".", "..") or "/" in segment:
            raise defops.Failure(
                f"{m.file}:{m.line_number}: {quoted(segment)} is not a segment file name"
            )
        named.add(segment)
    pending = [s for s in sorted(named) if defops.exists(f"{data_dir}/{s}")]
    return Plan(
        quarantine_dir=quarantine_dir,
        data_dir=data_dir,
        pending=pending,
        named=len(named),
        lines=hits.total,
        threshold=threshold,
    )


def check() -> defops.Applicability:
    why = not_leader()
    if why is not None:
        return defops.not_needed(why)
    p = plan()
    if p.lines < p.threshold:
        return defops.not_needed(
            f"{p.lines} matching log lines, below the threshold of {p.threshold}"
        )
    if not p.pending:
        return defops.not_needed(
            f"all {p.named} segments named in the logs are already quarantined"
        )
    return defops.applies(
        f"{p.lines} matching log lines name {p.named} segments; "
        f"{len(p.pending)} still in {p.data_dir}"
    )


def apply() -> str:
    p = plan()
    defops.makedirs(p.quarantine_dir)
    for segment in p.pending:
        defops.info(f"quarantining {segment}")
        defops.rename(f"{p.data_dir}/{segment}", f"{p.quarantine_dir}/{segment}")
    return f"moved {len(p.pending)} segments to {p.quarantine_dir}"
