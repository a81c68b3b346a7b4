"""Stands in for pip's get-pip.py bootstrap where ansible-test cannot download it.

ansible-test bootstraps pip in each virtual environment it makes with a get-pip.py fetched from
its own file server, which a machine that reaches only the package index cannot reach; its message
says to save one in ~/.ansible/test/cache/. This one does the same job with what is at hand:
pip from the standard library's ensurepip, then the pip version (and packages) asked for, from the
package index. scripts/test-fleet puts it there.
"""

import subprocess
import sys

# In a process of its own: ensurepip points PIP_CONFIG_FILE at /dev/null in the environment of the
# process that calls it, which would hide the machine's pip configuration (its certificates).
subprocess.check_call(
    [sys.executable, "-m", "ensurepip", "--upgrade"], stdout=subprocess.DEVNULL
)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *args])
