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

import time

import defops


def stale() -> tuple[str, int, list[str]]:
    """The directory, the age limit, and the lock files older than it."""
    directory = defops.param("dir")
    if directory is None:
        raise defops.Failure("missing parameter: pass --param dir=VALUE")
    max_age = defops.int_param("max_age_secs", 3600)
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
