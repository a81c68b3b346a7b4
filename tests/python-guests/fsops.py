# /// script
# [tool.defops]
# name = "fsops"
# version = "0.1.0"
# description = "Test guest: performs the file-system calls its ops param lists"
# read-write = ["/"]
#
# [[tool.defops.param]]
# name = "ops"
# description = "the calls, one per line or ;-separated"
# default = ""
#
# [[tool.defops.param]]
# name = "phase"
# description = "check: run the ops in check instead of apply"
# default = "apply"
#
# [[tool.defops.param]]
# name = "ignore_errors"
# description = "set: succeed even when ops fail"
# default = ""
# ///
"""The fsops test guest again, in Python: the same ops, the same messages
(`OP ARGS -> ok [DATA]` or `OP ARGS -> KIND: MESSAGE`), through the defops
module, so every table the Rust guest runs can run through Python too.

Ops: read P, stat P, lstat P, ls P, readlink P, write P TEXT, mkdir P, rm P,
rmdir P, mv A B, chmod P OCTAL, chown P UID GID, ln TARGET LINK, print TEXT.
Arguments understand \\0, \\n, \\t, \\s (space), \\\\ and \\xHH.
"""

from collections.abc import Callable

import defops


def unescape(s: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        i += 1
        if c != "\\" or i >= len(s):
            out.append(c)
            continue
        n = s[i]
        i += 1
        simple = {"0": "\0", "n": "\n", "t": "\t", "s": " ", "\\": "\\"}
        if n in simple:
            out.append(simple[n])
        elif n == "x" and len(s) >= i + 2:
            out.append(chr(int(s[i : i + 2], 16)))
            i += 2
        else:
            out.append("\\" + n)
    return "".join(out)


def kind(e: BaseException) -> str:
    """The Rust SDK's name for an error, so messages match the Rust guest."""
    if isinstance(e, PermissionError):
        return "denied"
    if isinstance(e, FileNotFoundError):
        return "not found"
    if isinstance(e, FileExistsError):
        return "already exists"
    if isinstance(e, (ValueError, IsADirectoryError, NotADirectoryError)):
        return "invalid input"
    if isinstance(e, defops.Aborted):
        return "aborted"
    return "i/o error"


def message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)


def one(line: str) -> str:
    op, *raw = line.split()
    args = [unescape(a) for a in raw]
    ops: dict[str, Callable[[], object]] = {
        "read": lambda: defops.read_bytes(args[0]).decode("utf-8", "replace"),
        "stat": lambda: defops.stat(args[0]),
        "lstat": lambda: defops.stat(args[0], follow_symlinks=False),
        "ls": lambda: ",".join(defops.listdir(args[0])),
        "readlink": lambda: defops.readlink(args[0]),
        "write": lambda: defops.write_text(args[0], " ".join(args[1:2])),
        "mkdir": lambda: defops.mkdir(args[0]),
        "rm": lambda: defops.remove(args[0]),
        "rmdir": lambda: defops.rmdir(args[0]),
        "mv": lambda: defops.rename(args[0], args[1]),
        "chmod": lambda: defops.chmod(args[0], int(args[1], 8)),
        "chown": lambda: defops.chown(args[0], int(args[1]), int(args[2])),
        "ln": lambda: defops.symlink(args[0], args[1]),
        "print": lambda: print(" ".join(args)),
    }
    if op not in ops:
        raise ValueError(f"unknown op {op!r}")
    data = ops[op]()
    return "" if data is None else str(data)


def run_ops() -> str | None:
    """Runs every op; the first failure, if any."""
    first = None
    text = defops.param("ops", "") or ""
    for line in (x.strip() for x in text.replace(";", "\n").splitlines()):
        if not line:
            continue
        try:
            result = f"{line} -> ok {one(line)}"
        except Exception as e:  # noqa: BLE001 - each op's failure is reported
            result = f"{line} -> {kind(e)}: {message(e)}"
            first = first or result
        defops.info(result)
    return None if defops.param("ignore_errors") else first


def check() -> defops.Applicability:
    if defops.param("phase") == "check" and (err := run_ops()):
        raise RuntimeError(err)
    return defops.applies("ops to run")


def apply() -> str:
    if defops.param("phase") != "check" and (err := run_ops()):
        raise RuntimeError(err)
    return "ops done"
