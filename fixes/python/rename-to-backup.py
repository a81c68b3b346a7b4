# /// script
# [tool.defops]
# name = "rename-to-backup"
# version = "0.1.0"
# description = "Rename PATH to PATH.backup, unless the backup already exists"
# read-write = ["${path:dir}"]
#
# [[tool.defops.param]]
# name = "path"
# description = "the file or directory to move aside, absolute"
# required = true
# ///
"""rename-to-backup: rename ``path`` to ``path.backup``, the classic
idempotent first step before replacing something.

Param: ``path``. Applies when ``path`` exists and ``path.backup`` does not.

The Python twin of fixes/rename-to-backup (Rust): same params, messages and
plan.

What the operator can act on (a bad parameter, say) is raised as
``defops.Failure``: reported as its message alone, as the Rust twin's is.
"""

from __future__ import annotations

import defops


def present(path: str) -> bool:
    """Whether the path itself exists (a symlink counts, dangling or not).
    Any error but "not found" (a denial, say) is raised, never taken for
    "no"."""
    try:
        defops.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def paths() -> tuple[str, str]:
    path = defops.param("path")
    if path is None:
        raise defops.Failure("missing parameter: pass --param path=VALUE")
    return path, f"{path}.backup"


def check() -> defops.Applicability:
    path, backup = paths()
    match present(path), present(backup):
        case True, False:
            return defops.applies(f"{path} exists and {backup} does not")
        case False, True:
            return defops.not_needed(
                f"already renamed: {backup} exists, {path} does not"
            )
        case False, False:
            return defops.not_needed(f"{path} does not exist")
        case _:
            return defops.not_needed(f"{backup} already exists; not overwriting it")


def apply() -> str:
    path, backup = paths()
    # Idempotent: applying again (as the dry-run's second pass does) finds
    # the work done.
    if not present(path) and present(backup):
        return f"{path} is already {backup}"
    defops.rename(path, backup)
    return f"renamed {path} to {backup}"
