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

from dataclasses import dataclass

import defops

DEFAULT_PATTERN = r"checksum mismatch in segment (\S+)"

# What Rust's str::trim strips: Unicode's White_Space, spelled out (finding
# them with str.isspace() took 12,289 steps at every start). Python's
# str.strip() also strips the separators \x1c-\x1f; a line starting with
# one of them must not be read differently from the Rust twin.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
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


def not_leader() -> str | None:
    """Why the fix does not apply on this host, if it does not."""
    file = defops.param("leader_file")
    if file is None:
        return None
    role = defops.read_text(file).strip(WHITESPACE)
    if role != "leader":
        return f"{file} says {defops.quote(role)}, not leader"
    return None


def plan() -> Plan:
    log = defops.require_param("log")
    data_dir = defops.require_param("data_dir")
    quarantine_dir = defops.require_param("quarantine_dir")
    threshold = defops.int_param("threshold", 1)
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
                f"{m.file}:{m.line_number}: {defops.quote(segment)} is not a segment file name"
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
