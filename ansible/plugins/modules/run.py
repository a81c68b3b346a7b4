#!/usr/bin/python
# Copyright: defops-wasm contributors
# Apache License 2.0 (see the project's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: run
short_description: Run a defops-wasm fix on the host (check mode is its dry-run)
version_added: 0.1.0
description:
  - Runs C(defops-wasm run FIX --json) on the host with the grants and params given.
  - The action plugin of the same name first copies the fix (and its C(FIX.wasm.sig) whenever it is next to the fix)
    from the controller to a temporary directory on the host, and removes it afterwards.
  - Check mode runs C(--dry-run); diff mode returns the plan's unified diffs.
  - C(changed) comes from the tool's summary; it is never true in check mode or when a run has nothing to do.
  - Every non-zero exit of the tool fails the task with the tool's own message and its exit code in C(rc)
    (1 the fix failed, 2 usage or host error, 3 refused, 4 a limit, 5 paused).
options:
  fix:
    description:
      - The fix (a C(.wasm) component), a path on the controller (searched like M(ansible.builtin.copy)'s C(src)).
      - With O(remote_src=true), a path on the host.
    type: path
    required: true
  remote_src:
    description: The fix (and its signature) are already on the host.
    type: bool
    default: false
  allow:
    description: Directories granted read-write (C(--allow)).
    type: list
    elements: path
    default: []
  allow_ro:
    description: Directories granted read-only (C(--allow-ro)).
    type: list
    elements: path
    default: []
  allow_log:
    description: Log globs granted for reading (C(--allow-log)).
    type: list
    elements: str
    default: []
  params:
    description: The fix's parameters (C(--param NAME=VALUE) each).
    type: dict
    default: {}
  require_approval:
    description: Require a reviewer's signature (C(FIX.wasm.sig)) from an allowed signer.
    type: bool
    default: false
  allowed_signers:
    description: The reviewers' keys on the host, in git's allowed_signers format.
    type: path
  signature:
    description:
      - The signature, if not next to the fix as C(FIX.wasm.sig). A controller path unless O(remote_src=true).
    type: path
  timeout:
    description: Stop the fix after this long (C(--timeout), e.g. C(60s)).
    type: str
  refuse_paused:
    description:
      - In check mode, fail with exit code 5 when the host is paused (every fix, or this fix by its file name),
        as the real run would. The tool itself lets dry-runs run while paused.
    type: bool
    default: false
  check_after:
    description:
      - After a real run that succeeded, run C(defops-wasm check) (the monitoring plugin) and return its verdict as
        RV(check). It does not fail the task; the caller decides (the rollout stops unless it is OK).
    type: bool
    default: false
extends_documentation_fragment:
  - defops.wasm.common
attributes:
  check_mode:
    support: full
    description: Check mode runs the fix with C(--dry-run) and proves its idempotency.
  diff_mode:
    support: full
    description: Returns the plan's unified diffs as C(diff.prepared).
  action:
    support: full
    description: The action plugin copies the fix to the host.
notes:
  - A real run needs an earlier dry-run of the same fix, grants and params on the host (the tool's guard); run the
    task in check mode first, as the C(defops.wasm.rollout) playbook does.
author:
  - defops-wasm contributors (@defops-wasm)
"""

EXAMPLES = r"""
- name: Dry-run the fix (check mode)
  defops.wasm.run:
    fix: fixes/config-set.wasm
    allow: [/var/lib/app]
    params: {file: /var/lib/app/app.conf, key: max_conn, value: "50"}
  check_mode: true
  diff: true
  register: plan

- name: Run it for real
  defops.wasm.run:
    fix: fixes/config-set.wasm
    allow: [/var/lib/app]
    params: {file: /var/lib/app/app.conf, key: max_conn, value: "50"}
  register: done
"""

RETURN = r"""
run_id:
  description: The run's id on the host (its journal is C(STATE/runs/RUN_ID)).
  returned: when the tool started the run
  type: str
  sample: 20261202T101500Z-123abc
head:
  description: The journal's head hash; anchor it elsewhere (the rollout's ledger does).
  returned: when the tool started the run
  type: str
outcome:
  description: C(planned), C(applied), C(not-needed), C(failed), C(refused), C(paused), ...
  returned: always
  type: str
dry_run:
  description: Whether this was a dry-run (check mode).
  returned: always
  type: bool
changed_count:
  description: Effects planned (dry-run) or committed (real run).
  returned: always
  type: int
unchanged_count:
  description: Writes of content a file already had.
  returned: always
  type: int
idempotent:
  description: A dry-run's proof that a second apply would plan nothing (true when nothing is planned).
  returned: in check mode
  type: bool
messages:
  description: "What the fix said, one string each: C(LEVEL: text)."
  returned: always
  type: list
  elements: str
effects:
  description: The plan's effects as the tool printed them (op, path, before, diff...).
  returned: always
  type: list
  elements: dict
summary:
  description: The tool's summary line, as it is.
  returned: always
  type: dict
check:
  description: The monitoring check after the run (C(status) OK/WARNING/CRITICAL/UNKNOWN, C(exit_code), C(line), C(problems)).
  returned: when O(check_after=true) and the real run succeeded
  type: dict
rc:
  description: The tool's exit code (0 success, 1 fix failed, 2 usage or host error, 3 refused, 4 limit, 5 paused).
  returned: always
  type: int
"""

import os
import typing as t

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.defops.wasm.plugins.module_utils.runner import (
    COMMON_ARGS,
    EXIT_MEANINGS,
    DefopsRunner,
    pause_in_force,
)


def run_args(params: dict[str, t.Any], dry_run: bool) -> list[str]:
    args = ["run", params["fix"]]
    for flag, key in (
        ("--allow", "allow"),
        ("--allow-ro", "allow_ro"),
        ("--allow-log", "allow_log"),
    ):
        for value in params[key] or []:
            args += [flag, value]
    for name, value in sorted((params["params"] or {}).items()):
        args += ["--param", f"{name}={value}"]
    if params["require_approval"]:
        args.append("--require-approval")
    if params["allowed_signers"]:
        args += ["--allowed-signers", params["allowed_signers"]]
    if params["signature"]:
        args += ["--signature", params["signature"]]
    if params["timeout"]:
        args += ["--timeout", params["timeout"]]
    if dry_run:
        args.append("--dry-run")
    return args


def main() -> None:
    argument_spec = dict(
        fix={"type": "path", "required": True},
        remote_src={"type": "bool", "default": False},
        allow={"type": "list", "elements": "path", "default": []},
        allow_ro={"type": "list", "elements": "path", "default": []},
        allow_log={"type": "list", "elements": "str", "default": []},
        params={"type": "dict", "default": {}},
        require_approval={"type": "bool", "default": False},
        allowed_signers={"type": "path"},
        signature={"type": "path"},
        timeout={"type": "str"},
        refuse_paused={"type": "bool", "default": False},
        check_after={"type": "bool", "default": False},
        **COMMON_ARGS,
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    runner = DefopsRunner(module)
    dry_run = module.check_mode
    if dry_run and module.params["refuse_paused"]:
        fix_name = os.path.basename(module.params["fix"])
        fix_name = fix_name[: -len(".wasm")] if fix_name.endswith(".wasm") else fix_name
        pause = pause_in_force(runner.status(), fix_name)
        if pause is not None:
            by = (pause.get("by") or {}).get("name", "?")
            module.fail_json(
                msg=f"paused by {by} at {pause.get('time', '?')}: {pause.get('reason', '')}; "
                "a real run would be refused (`defops-wasm resume` lifts it)",
                rc=5,
                meaning=EXIT_MEANINGS[5],
                outcome="paused",
                dry_run=True,
                pause=pause,
            )
    result = runner.run(run_args(module.params, dry_run))
    summary = result.summary
    effects = result.of_type("effect")
    messages = [
        "{}: {}".format(m.get("level", "info"), m.get("text", ""))
        for m in result.of_type("message")
    ]
    facts: dict[str, t.Any] = {
        "run_id": summary.get("run_id"),
        "head": summary.get("head"),
        "outcome": summary.get("outcome", "error"),
        "dry_run": dry_run,
        "changed_count": int(summary.get("changed", 0) or 0),
        "unchanged_count": int(summary.get("unchanged", 0) or 0),
        "messages": messages,
        "effects": effects,
        "summary": summary,
    }
    if dry_run:
        facts["idempotent"] = bool(summary.get("idempotent", True))
    if result.rc != 0:
        runner.fail(result, **facts)
    out: dict[str, t.Any] = dict(
        changed=not dry_run and facts["changed_count"] > 0, rc=result.rc, **facts
    )
    if not dry_run and module.params["check_after"]:
        out["check"] = runner.check()
    if module._diff:
        diffs = [e["diff"] for e in effects if e.get("diff")]
        others = [
            "{} {}".format(e.get("op"), e.get("path"))
            for e in effects
            if not e.get("diff")
        ]
        out["diff"] = {
            "prepared": "".join(diffs) + "".join(f"{line}\n" for line in others)
        }
    module.exit_json(**out)


if __name__ == "__main__":
    main()
