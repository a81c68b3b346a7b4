# Copyright: defops-wasm contributors
# Apache License 2.0 (see the project's LICENSE)
"""Copies the fix (and its signature, when there is one) to the host, runs defops.wasm.run, removes the copies."""

from __future__ import annotations

import os
import typing as t

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(
        self, tmp: t.Any = None, task_vars: dict[str, t.Any] | None = None
    ) -> dict[str, t.Any]:
        if task_vars is None:
            task_vars = {}
        result = super().run(tmp, task_vars)
        del tmp  # tmp has no effect: the connection's own temporary directory is used
        args = dict(self._task.args)
        if args.get("remote_src"):
            try:
                result.update(
                    self._execute_module(module_args=args, task_vars=task_vars)
                )
            finally:
                self._remove_tmp_path(self._connection._shell.tmpdir)
            return result

        fix = args.get("fix")
        if not fix:
            result.update(
                failed=True,
                rc=2,
                msg="fix is required: the path of the .wasm on the controller",
            )
            return result
        try:
            local_fix = self._find_needle("files", fix)
        except AnsibleError as e:
            result.update(
                failed=True,
                rc=2,
                msg=f"the fix {fix} was not found on the controller: {to_native(e)}",
            )
            return result
        # The signature travels with the fix whenever it is there: the host's configuration may
        # require approval ([approval] required) even when the play does not ask for it.
        try:
            required = boolean(args.get("require_approval", False), strict=True)
        except TypeError:
            result.update(
                failed=True,
                rc=2,
                msg=f"require_approval {args.get('require_approval')!r} is not a boolean: give true or false",
            )
            return result
        args["require_approval"] = required
        local_sig: str | None = args.get("signature") or local_fix + ".sig"
        if not os.path.isfile(local_sig):
            if required or args.get("signature"):
                result.update(
                    failed=True,
                    rc=2,
                    msg=f"the signature {local_sig} is not on the controller"
                    + (" and approval is required" if required else "")
                    + ": sign the fix with `defops-wasm approve` or give signature",
                )
                return result
            local_sig = None

        tmp_dir = (
            self._connection._shell.tmpdir
        )  # made by ActionBase.run, as TRANSFERS_FILES is set
        try:
            # Keep the fix's file name: a pause of one fix is by that name.
            remote_fix = self._connection._shell.join_path(
                tmp_dir, os.path.basename(local_fix)
            )
            self._transfer_file(local_fix, remote_fix)
            files = [remote_fix]
            if local_sig:
                remote_sig = remote_fix + ".sig"
                self._transfer_file(local_sig, remote_sig)
                files.append(remote_sig)
                args["signature"] = remote_sig
            self._fixup_perms2([tmp_dir] + files)
            args["fix"] = remote_fix
            result.update(self._execute_module(module_args=args, task_vars=task_vars))
        finally:
            self._remove_tmp_path(tmp_dir)
        return result
