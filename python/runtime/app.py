"""The Python runtime of defops-wasm: runs a fix's source as a fix.

The host hands over the script (``script.source``/``script.name``); this
module compiles it under its own file name, runs it once per instance, and
calls its ``check()`` and ``apply()``. The code it compiled for an earlier
run comes back as ``script.code`` (the host keeps what ``compile_script``
returned on a fresh instance, before anything of the script ran). Whatever the script raises comes back
to the host as the fix's error, with a traceback that names the script's
file and line.

Only the modules imported here exist at run time (the component is a
snapshot taken after this module ran): ``STDLIB`` is the list a fix may
import, with ``defops``. An import of anything else fails with a message
that names the list.
"""

from __future__ import annotations

# The standard library a fix gets. Keep this list, STDLIB below and the
# README's list the same; builtins, marshal and warnings are the runtime's
# own (the first two are built in, and the list's modules import the third).
import abc
import argparse
import base64
import binascii
import bisect
import builtins
import calendar
import collections
import configparser
import contextlib
import copy
import csv
import dataclasses
import datetime
import decimal
import difflib
import enum
import errno
import fnmatch
import fractions
import functools
import gzip
import hashlib
import heapq
import html
import io
import ipaddress
import itertools
import json
import linecache
import logging
import marshal
import math
import operator
import os
import posixpath
import pprint
import random
import re
import shlex
import stat
import statistics
import string
import struct
import sys
import textwrap
import time
import tomllib
import traceback
import types
import typing
import urllib.parse
import uuid
import warnings
import zlib
from importlib.machinery import ModuleSpec

import defops
from componentize_py_types import Err
from wit_world import WitWorld as _World
from wit_world.imports import script
from wit_world.imports import types as wit

STDLIB = sorted(
    m.__name__
    for m in (
        abc, argparse, base64, binascii, bisect, calendar, collections,
        configparser, contextlib, copy, csv, dataclasses, datetime, decimal,
        difflib, enum, errno, fnmatch, fractions, functools, gzip, hashlib,
        heapq, html, io, ipaddress, itertools, json, logging, math, operator,
        os, posixpath, pprint, random, re, shlex, stat, statistics, string,
        struct, sys, textwrap, time, tomllib, types, typing, urllib.parse,
        uuid, zlib,
    )
)  # fmt: skip


class _NotInRuntime:
    """Last on ``sys.meta_path``: an import nothing else found names the
    modules a fix can have."""

    @staticmethod
    def find_spec(
        name: str, path: object = None, target: object = None
    ) -> ModuleSpec | None:
        raise ModuleNotFoundError(
            f"No module named {name!r} in the defops-wasm Python runtime; "
            f"a fix can import defops and: {', '.join(STDLIB)}",
            name=name,
        )


sys.meta_path.append(_NotInRuntime())  # type: ignore[arg-type]

_loaded: dict[str, object] | None = None
# The script's code, and what the compiler warned of (category, message,
# line): said again wherever the code comes from.
Compiled = tuple[types.CodeType, list[tuple[str, str, int]]]
_code: Compiled | None = None


def _name() -> str:
    return str(script.name())


def _compile_now(name: str, source: str) -> Compiled:
    """Compiles the script, keeping the compiler's warnings to say later."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = compile(source, name, "exec", dont_inherit=True)
    return code, [(w.category.__name__, str(w.message), w.lineno) for w in caught]


def _compiled(name: str, source: str) -> Compiled:
    """The script's code: as compiled for an earlier run when the host kept
    it (and it reads back as this script's), else compiled now."""
    global _code
    if _code is None:
        found: object = None
        kept = bytes(script.code())
        if kept:
            try:
                found = marshal.loads(kept)
            except Exception:  # noqa: BLE001 - any damage: compile instead
                found = None
        if (
            isinstance(found, tuple)
            and len(found) == 2
            and isinstance(found[0], types.CodeType)
            and found[0].co_filename == name
            and isinstance(found[1], list)
            and all(_is_warning(w) for w in found[1])
        ):
            _code = (found[0], found[1])
        else:
            _code = _compile_now(name, source)
    return _code


def _is_warning(w: object) -> bool:
    """A compiler's warning as kept: (category name, message, line)."""
    return (
        isinstance(w, tuple)
        and len(w) == 3
        and isinstance(w[0], str)
        and isinstance(w[1], str)
        and isinstance(w[2], int)
    )


def _warn(said: list[tuple[str, str, int]], name: str) -> None:
    """Says the compiler's warnings, as the compiler would have."""
    for category, message, line in said:
        kind = getattr(builtins, str(category), None)
        if not (isinstance(kind, type) and issubclass(kind, Warning)):
            kind = SyntaxWarning
        warnings.warn_explicit(str(message), kind, name, int(line))


def _load() -> dict[str, object]:
    """Compiles and runs the script once; its namespace."""
    global _loaded
    if _loaded is None:
        name, source = _name(), str(script.source())
        # Tracebacks show the script's own lines.
        linecache.cache[name] = (len(source), None, source.splitlines(True), name)
        code, said = _compiled(name, source)
        _warn(said, name)
        module = types.ModuleType("__fix__")
        module.__file__ = name
        # A module like any imported one: dataclasses, typing and pickle look
        # a class's module up in sys.modules.
        sys.modules[module.__name__] = module
        exec(code, module.__dict__)  # noqa: S102 - running the fix is the point
        _loaded = module.__dict__
    return _loaded


def _failure(e: BaseException) -> str:
    """The script's part of a traceback: its frames, then the error; a
    ``defops.Failure``'s message alone."""
    if isinstance(e, defops.Failure):
        return str(e)
    name = _name()
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == name]
    lines = traceback.format_list(frames)
    lines += traceback.format_exception_only(type(e), e)
    head = "Traceback (most recent call last):\n" if frames else ""
    return (head + "".join(lines)).rstrip()


def _call(function: str) -> object:
    try:
        namespace = _load()
        f = namespace.get(function)
        if not callable(f):
            raise Err(f"{_name()} defines no {function}() function")
        return f()
    except Err as e:
        # A message is the fix's error as it is; anything else raised as an
        # Err (a host error from the raw bindings) is reported like any
        # exception, never handed to the host as the wrong type.
        if isinstance(e.value, str):
            raise
        raise Err(_failure(e)) from None
    except BaseException as e:  # noqa: BLE001 - every failure is the fix's
        raise Err(_failure(e)) from None


class WitWorld(_World):
    """The exports the host calls."""

    def compile_script(self) -> bytes:
        try:
            return marshal.dumps(_compiled(_name(), str(script.source())))
        except BaseException as e:  # noqa: BLE001 - check() reports it
            raise Err(_failure(e)) from None

    def check(self) -> wit.Applicability:
        r = _call("check")
        if isinstance(r, defops.Applicability):
            if r.applies:
                return wit.Applicability_Applies(r.why)
            return wit.Applicability_NotNeeded(r.why)
        raise Err(
            f"{_name()}: check() must return defops.applies(why) or "
            f"defops.not_needed(why), not {r!r}"
        )

    def apply(self) -> str:
        r = _call("apply")
        return "" if r is None else str(r)
