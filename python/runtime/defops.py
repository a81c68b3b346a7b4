"""What a Python fix uses to look at and change the host.

Shaped like Python's own APIs: ``read_text``/``write_text`` like
``pathlib``, ``listdir``/``rename``/``chmod`` like ``os``. Every call goes
to the defops-wasm host, which resolves the path against the operator's
grants and answers from the plan: a change is planned, never written
directly; the host commits the plan after ``apply`` returns.

A refused call raises the exception Python would: ``PermissionError``
(outside the grants, read-only, a change during ``check``),
``FileNotFoundError``, ``FileExistsError``, ``IsADirectoryError``/
``NotADirectoryError`` or ``ValueError`` (invalid input), ``OSError`` (I/O);
``Aborted`` when the run is being stopped.

A fix defines two functions::

    import defops

    def check():
        if "max_conn = 50" in defops.read_text(defops.param("file")):
            return defops.not_needed("already set")
        return defops.applies("max_conn is not 50")

    def apply():
        ...
        return "max_conn set to 50"
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

from componentize_py_types import Err
from wit_world.imports import context, fs, logs, report, types

__all__ = [
    "Aborted",
    "Applicability",
    "DirEntry",
    "Failure",
    "GrepMatch",
    "GrepResult",
    "Stat",
    "applies",
    "chmod",
    "chown",
    "count",
    "debug",
    "dry_run",
    "error",
    "exists",
    "grep",
    "hostname",
    "info",
    "int_param",
    "is_dir",
    "is_file",
    "listdir",
    "makedirs",
    "mkdir",
    "not_needed",
    "param",
    "params",
    "quote",
    "read_bytes",
    "read_text",
    "readlink",
    "remove",
    "rename",
    "require_param",
    "rmdir",
    "scandir",
    "stat",
    "symlink",
    "tail",
    "warn",
    "write_bytes",
    "write_text",
]


class Aborted(Exception):
    """The run is being stopped (its deadline passed, or a pause landed)."""


class Failure(Exception):
    """The fix's own error, for the operator: reported as its message alone,
    without a traceback (the Rust SDK's ``Failure``). Raise it for what the
    operator can act on (a bad parameter, a file that is not as expected);
    any other exception is reported with the script's traceback."""


@dataclass(frozen=True)
class Applicability:
    """What ``check`` returns: :func:`applies` or :func:`not_needed`."""

    applies: bool
    why: str


def applies(why: str) -> Applicability:
    """``check``'s answer: the fix applies here, because ``why``."""
    return Applicability(True, why)


def not_needed(why: str) -> Applicability:
    """``check``'s answer: nothing to do here, because ``why``."""
    return Applicability(False, why)


@dataclass(frozen=True)
class Stat:
    """Metadata, with ``os.stat_result``'s names."""

    kind: str
    st_size: int
    st_mode: int
    st_uid: int
    st_gid: int
    st_mtime: int


def _raise(e: Err, path: str) -> None:
    v = e.value
    text = getattr(v, "value", str(v))
    if isinstance(v, types.Error_NotFound):
        raise FileNotFoundError(errno.ENOENT, text, path) from None
    if isinstance(v, types.Error_Denied):
        raise PermissionError(errno.EACCES, text, path) from None
    if isinstance(v, types.Error_AlreadyExists):
        raise FileExistsError(errno.EEXIST, text, path) from None
    if isinstance(v, types.Error_InvalidInput):
        if "is a directory" in text:
            raise IsADirectoryError(errno.EISDIR, text, path) from None
        if "not a directory" in text:
            raise NotADirectoryError(errno.ENOTDIR, text, path) from None
        raise ValueError(text) from None  # noqa: TRY004 - invalid input, not a type
    if isinstance(v, types.Error_Aborted):
        raise Aborted(text) from None
    raise OSError(errno.EIO, text, path) from None


def _call(f, path: str, *args):  # type: ignore[no-untyped-def]
    try:
        return f(path, *args)
    except Err as e:
        _raise(e, path)


_KINDS = {
    types.FileKind.FILE: "file",
    types.FileKind.DIRECTORY: "directory",
    types.FileKind.SYMLINK: "symlink",
    types.FileKind.OTHER: "other",
}


def read_bytes(path: str) -> bytes:
    """The whole content of a file."""
    return bytes(_call(fs.read, path))


def read_text(path: str, encoding: str = "utf-8") -> str:
    """The whole content of a text file."""
    return read_bytes(path).decode(encoding)


def write_bytes(path: str, data: bytes) -> None:
    """Replaces (or creates, mode 0644) a file, atomically."""
    _call(fs.write, path, bytes(data))


def write_text(path: str, text: str, encoding: str = "utf-8") -> None:
    """Replaces (or creates, mode 0644) a text file, atomically."""
    write_bytes(path, text.encode(encoding))


def stat(path: str, follow_symlinks: bool = True) -> Stat:
    """Metadata of ``path`` (of a final symlink itself when not following)."""
    f = fs.metadata if follow_symlinks else fs.symlink_metadata
    s = _call(f, path)
    return Stat(_KINDS[s.kind], s.size, s.mode, s.uid, s.gid, s.mtime)


def exists(path: str) -> bool:
    """True when ``path`` exists (following symlinks). A denial raises."""
    try:
        stat(path)
    except FileNotFoundError:
        return False
    return True


def is_file(path: str) -> bool:
    """True when ``path`` is a regular file (following symlinks)."""
    try:
        return stat(path).kind == "file"
    except FileNotFoundError:
        return False


def is_dir(path: str) -> bool:
    """True when ``path`` is a directory (following symlinks)."""
    try:
        return stat(path).kind == "directory"
    except FileNotFoundError:
        return False


def listdir(path: str) -> list[str]:
    """The names in a directory, sorted."""
    return [e.name for e in _call(fs.list_dir, path)]


@dataclass(frozen=True)
class DirEntry:
    """One entry of :func:`scandir`; ``kind`` is the entry's own (a symlink
    is ``"symlink"``, whatever it points to)."""

    name: str
    path: str
    kind: str

    def is_file(self) -> bool:
        """True for a regular file (not a symlink to one)."""
        return self.kind == "file"

    def is_dir(self) -> bool:
        """True for a directory (not a symlink to one)."""
        return self.kind == "directory"

    def is_symlink(self) -> bool:
        """True for a symlink."""
        return self.kind == "symlink"


def scandir(path: str) -> list[DirEntry]:
    """The entries of a directory, sorted by name, with their kinds (one
    host call, like the Rust SDK's ``fs::read_dir``)."""
    base = path.rstrip("/")
    return [
        DirEntry(e.name, f"{base}/{e.name}", _KINDS[e.kind])
        for e in _call(fs.list_dir, path)
    ]


def readlink(path: str) -> str:
    """The target of a symlink."""
    return str(_call(fs.read_link, path))


def mkdir(path: str) -> None:
    """Creates one directory (mode 0755); the parent must exist."""
    _call(fs.create_dir, path)


def makedirs(path: str) -> None:
    """Creates a directory and any missing parents (mode 0755), like
    ``os.makedirs(path, exist_ok=True)`` and the Rust SDK's
    ``fs::create_dir_all``: nothing to do when it is already a directory;
    ``FileExistsError`` when it is something else."""
    try:
        if stat(path).kind == "directory":
            return
        raise FileExistsError(
            errno.EEXIST, f"{path}: exists and is not a directory", path
        )
    except FileNotFoundError:
        pass
    parent = path.rpartition("/")[0]
    if parent:
        makedirs(parent)
    mkdir(path)


def remove(path: str) -> None:
    """Removes a file or a symlink."""
    _call(fs.remove_file, path)


def rmdir(path: str) -> None:
    """Removes an empty directory."""
    _call(fs.remove_dir, path)


def rename(src: str, dst: str) -> None:
    """Renames within the grants; replaces a file at ``dst``."""
    _call(fs.rename, src, dst)


def chmod(path: str, mode: int) -> None:
    """Sets the permission bits (``0o640``)."""
    _call(fs.set_mode, path, mode)


def chown(path: str, uid: int, gid: int) -> None:
    """Sets the owner and group."""
    _call(fs.set_owner, path, uid, gid)


def symlink(target: str, link: str) -> None:
    """Creates a symlink at ``link`` pointing to ``target``."""
    try:
        fs.symlink(target, link)
    except Err as e:
        _raise(e, link)


def param(name: str, default: str | None = None) -> str | None:
    """The value of ``--param NAME=VALUE``, or ``default``."""
    v = context.param(name)
    return default if v is None else v


def require_param(name: str) -> str:
    """A parameter the fix cannot do without (the Rust SDK's
    ``require_param``): missing, it fails the fix with a :class:`Failure`."""
    value = context.param(name)
    if value is None:
        raise Failure(f"missing parameter: pass --param {name}=VALUE")
    return str(value)


def int_param(name: str, default: int) -> int:
    """A whole number of at least 0, or ``default`` when not given; strict
    like the Rust SDK's ``param_or::<u64>`` (no sign but ``+``, no spaces,
    no ``_``), failing with the same message."""
    value = context.param(name)
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
    raise Failure(f"parameter {name}={quote(value)}: {why}")


def quote(text: str) -> str:
    """``text`` in double quotes, control characters escaped: how the Rust
    SDK's messages show a value (``{:?}``)."""
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


def params() -> dict[str, str]:
    """Every parameter, by name."""
    return dict(context.params())


def dry_run() -> bool:
    """True for a dry-run. A fix behaves the same either way."""
    return bool(context.dry_run())


def hostname() -> str:
    """The host's name."""
    return str(context.hostname())


def debug(message: str) -> None:
    """A message for the operator (level debug); journaled."""
    report.log(report.Level.DEBUG, str(message))


def info(message: str) -> None:
    """A message for the operator (level info); journaled."""
    report.log(report.Level.INFO, str(message))


def warn(message: str) -> None:
    """A message for the operator (level warn); journaled."""
    report.log(report.Level.WARN, str(message))


def error(message: str) -> None:
    """A message for the operator (level error); journaled."""
    report.log(report.Level.ERROR, str(message))


@dataclass(frozen=True)
class GrepMatch:
    """One matching log line."""

    file: str
    line_number: int
    offset: int
    line: str
    captures: list[str | None]


@dataclass(frozen=True)
class GrepResult:
    """What :func:`grep` found: at most ``max`` matches of ``total``."""

    matches: list[GrepMatch]
    total: int
    truncated: bool
    files: list[str]


def grep(glob: str, pattern: str, max: int = 1000) -> GrepResult:
    """Lines of the granted log files matching a regular expression."""
    try:
        r = logs.grep(glob, pattern, max)
    except Err as e:
        _raise(e, glob)
        raise
    return GrepResult(
        [
            GrepMatch(m.file, m.line_number, m.offset, m.line, list(m.captures))
            for m in r.matches
        ],
        r.total,
        r.truncated,
        list(r.files),
    )


def count(glob: str, pattern: str) -> int:
    """The number of log lines matching a regular expression."""
    try:
        return int(logs.count(glob, pattern))
    except Err as e:
        _raise(e, glob)
        raise


def tail(glob: str, lines: int) -> list[str]:
    """The last ``lines`` lines of the newest matching log file(s)."""
    try:
        return list(logs.tail(glob, lines))
    except Err as e:
        _raise(e, glob)
        raise
