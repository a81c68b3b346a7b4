"""The options every defops.wasm module shares: where the tool is and which state and
configuration it uses on the host (module_utils.runner.COMMON_ARGS)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  binary:
    description: The defops-wasm binary on the host.
    type: str
    default: defops-wasm
  state_dir:
    description: The host's state directory (C(--state-dir)); the tool's default when not given.
    type: path
  config:
    description: The host's configuration file (C(--config)); the tool's default when not given.
    type: path
"""
