#!/usr/bin/python
# Copyright: defops-wasm contributors
# Apache License 2.0 (see the project's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollback
short_description: Roll a defops-wasm run back on the host, against its anchored journal head
version_added: 0.1.0
description:
  - Runs C(defops-wasm rollback RUN_ID --expect-head HEAD --json) on the host.
  - The journal must end at O(expect_head) (the head the rollout's ledger recorded); a journal that does not,
    or a tree that drifted since the run, is refused (exit 3) and nothing changes.
  - A second rollback of the same run changes nothing (C(nothing-to-undo)).
  - Every non-zero exit fails the task with the tool's own message and its exit code in C(rc).
options:
  run_id:
    description: The run to undo.
    type: str
    required: true
  expect_head:
    description: The head hash the run's journal must end at.
    type: str
  force:
    description: Put the tree back even where it drifted (C(--force)).
    type: bool
    default: false
extends_documentation_fragment:
  - defops.wasm.common
attributes:
  check_mode:
    support: full
    description: Check mode runs C(rollback --dry-run).
  diff_mode:
    support: full
    description: Returns the inverse plan's unified diffs as C(diff.prepared).
author:
  - defops-wasm contributors (@defops-wasm)
"""

EXAMPLES = r"""
- name: Undo a run
  defops.wasm.rollback:
    run_id: 20261202T101500Z-123abc
    expect_head: f83ec4f9cfba72f1b4638101bf24a143b5e0761558626af10b319e10d8bdbea2
"""

RETURN = r"""
run_id:
  description: The rollback's own run id.
  returned: when the rollback started
  type: str
rollback_of:
  description: The run undone.
  returned: always
  type: str
outcome:
  description: C(rolled-back), C(nothing-to-undo), C(refused), C(not-restored), ...
  returned: always
  type: str
undone:
  description: How many effects were undone.
  returned: always
  type: int
head:
  description: The rollback journal's head hash.
  returned: when the rollback started
  type: str
notes:
  description: The tool's notes (each drifted path, for instance).
  returned: always
  type: list
  elements: str
rc:
  description: The tool's exit code.
  returned: always
  type: int
"""

import typing as t

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.defops.wasm.plugins.module_utils.runner import (
    COMMON_ARGS,
    DefopsRunner,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            run_id={"type": "str", "required": True},
            expect_head={"type": "str"},
            force={"type": "bool", "default": False},
            **COMMON_ARGS,
        ),
        supports_check_mode=True,
    )
    runner = DefopsRunner(module)
    args = ["rollback", module.params["run_id"]]
    if module.params["expect_head"]:
        args += ["--expect-head", module.params["expect_head"]]
    if module.params["force"]:
        args.append("--force")
    if module.check_mode:
        args.append("--dry-run")
    result = runner.run(args)
    summary = result.summary
    effects = result.of_type("effect")
    facts: dict[str, t.Any] = {
        "run_id": summary.get("run_id"),
        "rollback_of": module.params["run_id"],
        "outcome": summary.get("outcome", "error"),
        "undone": int(summary.get("undone", 0) or 0),
        "head": summary.get("head"),
        "notes": [str(n.get("text", "")) for n in result.of_type("note")],
        "summary": summary,
    }
    if result.rc != 0:
        runner.fail(result, **facts)
    out: dict[str, t.Any] = dict(
        changed=not module.check_mode and facts["undone"] > 0, rc=0, **facts
    )
    if module._diff:
        out["diff"] = {"prepared": "".join(e["diff"] for e in effects if e.get("diff"))}
    module.exit_json(**out)


if __name__ == "__main__":
    main()
