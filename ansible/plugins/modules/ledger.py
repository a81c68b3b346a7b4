#!/usr/bin/python
# Copyright: defops-wasm contributors
# Apache License 2.0 (see the project's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ledger
short_description: Append one line to a fleet rollout's ledger (JSON Lines), whole, under a lock
version_added: 0.1.0
description:
  - The ledger is the external anchor of every host's journal head. The rollout playbook runs this module on the
    controller, delegated to localhost, once with the dry-runs' lines, then for each host right after its real run.
  - The lines are written under an exclusive C(flock) and synced, so writers at the same time never interleave
    partial lines.
options:
  path:
    description: The ledger file; its directory is made if missing.
    type: path
    required: true
  record:
    description: The line to append (a JSON object); C(time) is added when missing.
    type: dict
  records:
    description: Several lines to append at once, under one lock (a batch of hosts).
    type: list
    elements: dict
attributes:
  check_mode:
    support: full
    description: Appends in check mode too; a dry-run's result belongs in the ledger.
  diff_mode:
    support: none
    description: It changes no file, so there is nothing to show.
author:
  - defops-wasm contributors (@defops-wasm)
"""

EXAMPLES = r"""
- name: Record this host's run
  defops.wasm.ledger:
    path: ledgers/20261202T101500Z-4242.jsonl
    record: {host: "{{ inventory_hostname }}", wave: 1, run_id: "{{ real.run_id }}", head: "{{ real.head }}"}
  delegate_to: localhost
"""

RETURN = r"""
lines:
  description: The lines written, without their newlines.
  returned: always
  type: list
  elements: str
"""

import datetime
import fcntl
import json
import os

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "record": {"type": "dict"},
            "records": {"type": "list", "elements": "dict"},
        },
        required_one_of=[("record", "records")],
        mutually_exclusive=[("record", "records")],
        supports_check_mode=True,
    )
    path = module.params["path"]
    records = module.params["records"] or [module.params["record"]]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        json.dumps(dict({"time": now}, **r), sort_keys=True, separators=(",", ":"))
        for r in records
    ]
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    try:
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        module.fail_json(msg=f"cannot append to the ledger {path}: {e.strerror or e}")
    module.exit_json(changed=True, lines=lines)


if __name__ == "__main__":
    main()
