# Copyright: defops-wasm contributors
# Apache License 2.0 (see the project's LICENSE)
"""Runs the defops-wasm binary on the host and reads its JSON Lines.

Every module of the collection goes through `DefopsRunner`: the global options
(`--state-dir`, `--config`, `--json`) are added the same way, and a non-zero
exit becomes a task failure carrying the tool's own message and exit code.
"""

from __future__ import annotations

import json
import typing as t

from ansible.module_utils.basic import AnsibleModule

# The exit codes of defops-wasm, as its --help documents them.
EXIT_MEANINGS = {
    0: "success",
    1: "the fix failed",
    2: "usage or host error",
    3: "refused",
    4: "a limit ended the run",
    5: "paused",
}

# The monitoring plugin's exit codes (Nagios/Icinga convention).
CHECK_STATES = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}

COMMON_ARGS: dict[str, t.Any] = {
    "binary": {"type": "str", "default": "defops-wasm"},
    "state_dir": {"type": "path"},
    "config": {"type": "path"},
}


class DefopsResult:
    """What one call of the binary gave: exit code, JSON lines, stderr."""

    def __init__(
        self, rc: int, lines: list[dict[str, t.Any]], stdout: str, stderr: str
    ) -> None:
        self.rc = rc
        self.lines = lines
        self.stdout = stdout
        self.stderr = stderr

    def of_type(self, kind: str) -> list[dict[str, t.Any]]:
        return [line for line in self.lines if line.get("type") == kind]

    @property
    def summary(self) -> dict[str, t.Any]:
        found = self.of_type("summary")
        return found[-1] if found else {}

    def error(self) -> str:
        """The tool's own one-line message for a failure."""
        for line in reversed(self.stderr.splitlines()):
            if line.startswith("defops-wasm: error: "):
                return line[len("defops-wasm: error: ") :]
        message = self.summary.get("error")
        if message:
            return str(message)
        tail = [line for line in self.stderr.splitlines() if line.strip()]
        if tail:
            return tail[-1]
        meaning = EXIT_MEANINGS.get(self.rc, "unknown")
        return f"defops-wasm exited with {self.rc} ({meaning})"


def parse_json_lines(text: str) -> list[dict[str, t.Any]]:
    """Every line that is a JSON object; anything else is skipped."""
    lines = []
    for raw in text.splitlines():
        raw = raw.strip()
        if not raw.startswith("{"):
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict):
            lines.append(value)
    return lines


class DefopsRunner:
    """Builds and runs `defops-wasm [global options] COMMAND ...` for a module."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module

    def base(self, json_output: bool = True) -> list[str]:
        params = self.module.params
        binary = params["binary"]
        found = self.module.get_bin_path(binary) if "/" not in binary else binary
        if not found:
            self.module.fail_json(
                msg=f"defops-wasm not found as {binary!r} on this host: install it (role defops.wasm.install) "
                "or set the binary option to its path",
                rc=2,
            )
        argv = [found]
        if params.get("state_dir"):
            argv += ["--state-dir", params["state_dir"]]
        if params.get("config"):
            argv += ["--config", params["config"]]
        if json_output:
            argv.append("--json")
        return argv

    def run(self, args: list[str], json_output: bool = True) -> DefopsResult:
        argv = self.base(json_output) + args
        rc, stdout, stderr = self.module.run_command(
            argv, check_rc=False, environ_update={"NO_COLOR": "1"}
        )
        return DefopsResult(
            rc, parse_json_lines(stdout) if json_output else [], stdout, stderr
        )

    def fail(self, result: DefopsResult, **extra: t.Any) -> None:
        """Fail the task with the tool's message, its exit code and what it said."""
        self.module.fail_json(
            msg=result.error(),
            rc=result.rc,
            meaning=EXIT_MEANINGS.get(result.rc, "unknown"),
            stderr=result.stderr,
            **extra,
        )

    def status(self) -> dict[str, t.Any]:
        """`defops-wasm status --json`; a failure fails the task."""
        result = self.run(["status"])
        if result.rc != 0:
            self.fail(result)
        found = result.of_type("status")
        return found[-1] if found else {}

    def check(self, warn_age: str | None = None) -> dict[str, t.Any]:
        """`defops-wasm check`, the monitoring plugin: its verdict, never a task failure."""
        args = ["check"]
        if warn_age:
            args += ["--warn-age", warn_age]
        result = self.run(args, json_output=False)
        lines = result.stdout.splitlines()
        return {
            "status": CHECK_STATES.get(result.rc, "UNKNOWN"),
            "exit_code": result.rc,
            "line": lines[0] if lines else result.error(),
            "problems": lines[1:],
        }


def pause_in_force(
    status: dict[str, t.Any], fix: str | None
) -> dict[str, t.Any] | None:
    """The pause that keeps FIX (every fix when None) from running, if any."""
    for pause in status.get("pauses") or []:
        if pause.get("scope") == "all" or (fix is not None and pause.get("fix") == fix):
            return pause
    return None
