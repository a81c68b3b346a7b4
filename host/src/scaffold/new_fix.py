# /// script
# # What this fix may touch, for the reviewer and the runner: the grants of
# # a run must lie within it. ${param} is a param's value, ${param:dir} its
# # directory.
# [tool.defops]
# name = "NAME"
# version = "0.1.0"
# description = "Make sure a file contains a line"
# read-write = ["${file:dir}"]
#
# [[tool.defops.param]]
# name = "file"
# description = "the file, absolute"
# required = true
#
# [[tool.defops.param]]
# name = "line"
# description = "the line it must contain"
# required = true
# ///
"""NAME: make sure a file contains a line.

Try it without changing anything first:

    defops-wasm run NAME.py --allow DIR -p file=DIR/FILE -p line=TEXT --dry-run

Every call below goes to defops-wasm, which answers from the operator's
grants and plans each change; nothing is written until the real run
commits the plan. Write it so that a second run changes nothing: the
dry-run proves that by running apply() twice.
"""

import defops

FILE = defops.param("file")
LINE = defops.param("line")


def check() -> defops.Applicability:
    """Read-only: does the fix apply here? (Any change here is refused.)"""
    try:
        text = defops.read_text(FILE)
    except FileNotFoundError:
        return defops.applies(f"{FILE} does not exist yet")
    if LINE in text.splitlines():
        return defops.not_needed(f"{FILE} already contains the line")
    return defops.applies(f"{FILE} lacks the line")


def apply() -> str:
    """The change: planned here, committed by the real run."""
    try:
        text = defops.read_text(FILE)
    except FileNotFoundError:
        text = ""
    if LINE in text.splitlines():
        return "nothing to do"
    if text and not text.endswith("\n"):
        text += "\n"
    defops.write_text(FILE, text + LINE + "\n")
    defops.info(f"added the line to {FILE}")
    return f"added the line to {FILE}"
