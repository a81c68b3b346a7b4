#!/usr/bin/python
# Copyright: defops-wasm contributors
# Apache License 2.0 (see the project's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pause
short_description: Pull or lift the defops-wasm off-switch on the host
version_added: 0.1.0
description:
  - O(state=paused) runs C(defops-wasm pause --reason REASON); real runs then refuse to start (exit 5) and a
    running one stops within a second. Dry-runs and rollbacks still work.
  - O(state=resumed) runs C(defops-wasm resume).
  - Idempotent; C(changed) says whether the host's state changed.
options:
  state:
    description: Whether the host should be paused or not.
    type: str
    choices: [paused, resumed]
    default: paused
  reason:
    description: Why (required to pause); recorded with who paused and when.
    type: str
  fix:
    description: Pause or resume one fix only (its file name without C(.wasm)); every fix when not given.
    type: str
extends_documentation_fragment:
  - defops.wasm.common
attributes:
  check_mode:
    support: full
    description: Reads C(status) and says what would change.
  diff_mode:
    support: none
    description: It changes no file, so there is nothing to show.
author:
  - defops-wasm contributors (@defops-wasm)
"""

EXAMPLES = r"""
- name: Stop every fix on every host
  defops.wasm.pause:
    reason: db failover

- name: Lift it
  defops.wasm.pause:
    state: resumed
"""

RETURN = r"""
paused:
  description: Whether the host is paused now (every fix, or O(fix)).
  returned: always
  type: bool
pause:
  description: The pause record (scope, fix, reason, by, host, time).
  returned: when paused
  type: dict
still_paused:
  description: Pauses of single fixes still in force after a resume of every fix.
  returned: when resumed
  type: list
  elements: dict
rc:
  description: The tool's exit code.
  returned: always
  type: int
"""


from ansible.module_utils.basic import AnsibleModule
from ansible_collections.defops.wasm.plugins.module_utils.runner import (
    COMMON_ARGS,
    DefopsRunner,
    pause_in_force,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            state={
                "type": "str",
                "choices": ["paused", "resumed"],
                "default": "paused",
            },
            reason={"type": "str"},
            fix={"type": "str"},
            **COMMON_ARGS,
        ),
        required_if=[("state", "paused", ["reason"])],
        supports_check_mode=True,
    )
    runner = DefopsRunner(module)
    fix = module.params["fix"]
    want = module.params["state"] == "paused"
    if module.check_mode:
        now = pause_in_force(runner.status(), fix) is not None
        module.exit_json(changed=now != want, paused=now, rc=0)
    args = ["pause"] if want else ["resume"]
    if fix:
        args.append(fix)
    if want:
        args += ["--reason", module.params["reason"]]
    result = runner.run(args)
    if result.rc != 0:
        runner.fail(result)
    if want:
        found = result.of_type("pause")
        line = found[-1] if found else {}
        module.exit_json(
            changed=not line.get("already", False),
            paused=True,
            pause=line.get("pause"),
            rc=0,
        )
    found = result.of_type("resume")
    line = found[-1] if found else {}
    module.exit_json(
        changed=line.get("resumed") is not None,
        paused=False,
        still_paused=line.get("still_paused") or [],
        rc=0,
    )


if __name__ == "__main__":
    main()
