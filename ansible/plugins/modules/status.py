#!/usr/bin/python
# Copyright: defops-wasm contributors
# Apache License 2.0 (see the project's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: status
short_description: Gather the defops-wasm status and monitoring check of the host as facts
version_added: 0.1.0
description:
  - Runs C(defops-wasm status --json) and C(defops-wasm check) on the host and returns both as facts
    (C(defops_status), C(defops_check)). Changes nothing.
  - The check is the monitoring plugin (Nagios/Icinga convention) C(0) OK, C(1) WARNING, C(2) CRITICAL,
    C(3) UNKNOWN; it does not fail the task, the caller decides (the rollout stops unless it is OK).
options:
  warn_age:
    description: The check's C(--warn-age) (a run with no outcome older than this is CRITICAL).
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
  facts:
    support: full
    description: Returns the status and the check as C(ansible_facts).
author:
  - defops-wasm contributors (@defops-wasm)
"""

EXAMPLES = r"""
- name: Is the host paused, and what does its check say?
  defops.wasm.status:

- name: Stop unless the check is OK
  ansible.builtin.assert:
    that: ansible_facts.defops_check.exit_code == 0
"""

RETURN = r"""
ansible_facts:
  description: The host's status and check.
  returned: always
  type: complex
  contains:
    defops_status:
      description: The object C(status --json) prints (paused, pauses, window, dry_run_first, fixes).
      type: dict
    defops_check:
      description: C(status) (OK, WARNING, CRITICAL, UNKNOWN), C(exit_code), C(line) (the plugin's first line), C(problems).
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.defops.wasm.plugins.module_utils.runner import (
    COMMON_ARGS,
    DefopsRunner,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(warn_age={"type": "str"}, **COMMON_ARGS),
        supports_check_mode=True,
    )
    runner = DefopsRunner(module)
    status = runner.status()
    check = runner.check(module.params["warn_age"])
    module.exit_json(
        changed=False, ansible_facts={"defops_status": status, "defops_check": check}
    )


if __name__ == "__main__":
    main()
