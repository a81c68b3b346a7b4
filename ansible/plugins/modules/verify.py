#!/usr/bin/python
# Copyright: defops-wasm contributors
# Apache License 2.0 (see the project's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: verify
short_description: Verify a run's journal on the host against its anchored head
version_added: 0.1.0
description:
  - Runs C(defops-wasm journal verify RUN_ID --expect-head HEAD --json) on the host. Changes nothing.
  - Fails, with the tool's message and exit code in C(rc), when the journal is torn (1) or was changed, cut
    short or replaced (3).
options:
  run_id:
    description: The run whose journal to verify.
    type: str
    required: true
  expect_head:
    description: The head hash the journal must end at (from the rollout's ledger).
    type: str
extends_documentation_fragment:
  - defops.wasm.common
attributes:
  check_mode:
    support: full
    description: It only reads, so it runs the same in check mode.
  diff_mode:
    support: none
    description: It changes no file, so there is nothing to show.
author:
  - defops-wasm contributors (@defops-wasm)
"""

EXAMPLES = r"""
- name: The journal ends at the head the ledger holds
  defops.wasm.verify:
    run_id: 20261202T101500Z-123abc
    expect_head: f83ec4f9cfba72f1b4638101bf24a143b5e0761558626af10b319e10d8bdbea2
"""

RETURN = r"""
verdict:
  description: C(intact), C(torn-tail) or C(bad).
  returned: when the tool answered
  type: str
head:
  description: The journal's head.
  returned: when the tool answered
  type: str
records:
  description: How many records the journal holds.
  returned: when the tool answered
  type: int
rc:
  description: The tool's exit code (0 intact, 1 torn tail, 3 bad).
  returned: always
  type: int
"""

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
            **COMMON_ARGS,
        ),
        supports_check_mode=True,
    )
    runner = DefopsRunner(module)
    args = ["journal", "verify", module.params["run_id"]]
    if module.params["expect_head"]:
        args += ["--expect-head", module.params["expect_head"]]
    result = runner.run(args)
    found = result.of_type("verify")
    verify = found[-1] if found else {}
    facts = {
        "verdict": verify.get("verdict"),
        "head": verify.get("head"),
        "records": verify.get("records"),
    }
    if result.rc != 0:
        runner.fail(result, **facts)
    module.exit_json(changed=False, rc=0, **facts)


if __name__ == "__main__":
    main()
