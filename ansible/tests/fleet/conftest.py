"""A fleet of eight hosts on this machine for real ansible-playbook runs.

Each host has its own root (its /var/lib/app) and state directory under a temporary directory.
Two hosts (h1, the canary, and h7) are reached over ssh through an sshd the session starts on
127.0.0.1 with a generated host key and user key; the others use the local connection. The
binary and the fixes come from DEFOPS_BIN and DEFOPS_FIXES (scripts/test-fleet sets them).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
HOSTS = [f"h{i}" for i in range(1, 9)]
SSH_HOSTS = {"h1", "h7"}


def _target() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))


@pytest.fixture(scope="session")
def binary() -> Path:
    path = Path(
        os.environ.get("DEFOPS_BIN", _target() / "debug" / "defops-wasm")
    ).resolve()
    if not os.access(path, os.X_OK):
        pytest.fail(f"no defops-wasm at {path}: build it or set DEFOPS_BIN")
    return path


@pytest.fixture(scope="session")
def fixes() -> Path:
    path = Path(os.environ.get("DEFOPS_FIXES", _target() / "fixes")).resolve()
    if not (path / "config-set.wasm").is_file():
        pytest.fail(
            f"no config-set.wasm in {path}: run scripts/build-fixes or set DEFOPS_FIXES"
        )
    return path


@pytest.fixture(scope="session")
def collections(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collection installed the way a user installs it: ansible-galaxy from ./ansible."""
    path = tmp_path_factory.mktemp("collections")
    subprocess.run(
        [
            VENV_BIN / "ansible-galaxy",
            "collection",
            "install",
            "--force",
            str(REPO / "ansible"),
            "-p",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """A real sshd on 127.0.0.1 with its own host key, user key and port."""

    def __init__(self, root: Path) -> None:
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not os.path.exists(sshd):
            pytest.fail("no sshd: install openssh-server (scripts/test-fleet does)")
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.port = free_port()
        self.key = root / "user_key"
        host_key = root / "host_key"
        for key in (self.key, host_key):
            if not key.exists():
                subprocess.run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                    check=True,
                )
        shutil.copy(f"{self.key}.pub", root / "authorized_keys")
        config = root / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"PidFile {root / 'sshd.pid'}\nSubsystem sftp internal-sftp\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with open(root / "sshd.log", "ab") as log:
            self.process = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)], stderr=log
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"sshd did not start: {(root / 'sshd.log').read_text()}")

    def host_vars(self) -> dict[str, t.Any]:
        return {
            "ansible_connection": "ssh",
            "ansible_host": "127.0.0.1",
            "ansible_port": self.port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Sshd]:
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def tree_hash(root: Path) -> str:
    """Names, contents and modes of every file under root."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest.update(f"{path.relative_to(root)}\0{st.st_mode:o}\0".encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


class Fleet:
    """Eight hosts' trees, an inventory, and ansible-playbook runs against them."""

    def __init__(
        self, root: Path, binary: Path, fixes: Path, collections: Path, sshd: Sshd
    ) -> None:
        self.root = root
        self.binary = binary
        self.fixes = fixes
        self.collections = collections
        self.sshd = sshd
        self.hosts = list(HOSTS)
        self.extra_hosts: dict[str, dict[str, t.Any]] = {}
        self.host_overrides: dict[str, dict[str, t.Any]] = {}
        for i, host in enumerate(self.hosts, start=1):
            app = self.app(host)
            app.mkdir(parents=True)
            (app / "app.conf").write_text(
                f"# {host}\nmax_conn = {10 + i}\nworkers = 4\n"
            )
            (app / "data.txt").write_text(f"data of {host}\n")
            self.state(host).mkdir(parents=True)
        self.ledgers = root / "ledgers"

    def app(self, host: str) -> Path:
        return self.root / "hosts" / host / "var" / "lib" / "app"

    def state(self, host: str) -> Path:
        return self.root / "hosts" / host / "state"

    def hashes(self) -> dict[str, str]:
        return {host: tree_hash(self.app(host)) for host in self.hosts}

    def host_vars(self, host: str) -> dict[str, t.Any]:
        app = self.app(host)
        base: dict[str, t.Any] = {
            "ansible_python_interpreter": sys.executable,
            "defops_binary": str(self.binary),
            "defops_state_dir": str(self.state(host)),
            "allow": str(app),
            "params": {"file": str(app / "app.conf"), "key": "max_conn", "value": "50"},
        }
        if host in SSH_HOSTS:
            base.update(self.sshd.host_vars())
        else:
            base["ansible_connection"] = "local"
        base.update(self.host_overrides.get(host, {}))
        return base

    def inventory(self) -> Path:
        hosts = {host: self.host_vars(host) for host in self.hosts}
        hosts.update(self.extra_hosts)
        path = self.root / "inventory.json"
        # A YAML inventory; JSON is YAML.
        path.write_text(json.dumps({"fleet": {"hosts": hosts}}))
        return path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(self.collections),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_HOST_KEY_CHECKING="False",
            ANSIBLE_LOCAL_TEMP=str(self.root / "ansible-tmp"),
            ANSIBLE_REMOTE_TMP=str(self.root / "remote-tmp"),
            ANSIBLE_RETRY_FILES_ENABLED="False",
            PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
        )
        return env

    def command(self, playbook: str, **extra: t.Any) -> list[str]:
        return [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            str(self.inventory()),
            playbook,
            "-e",
            json.dumps(extra),
        ]

    def play(self, playbook: str, **extra: t.Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(playbook, **extra),
            check=False,
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=600,
        )

    def start(self, playbook: str, **extra: t.Any) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(playbook, **extra),
            cwd=self.root,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def rollout(self, **extra: t.Any) -> subprocess.CompletedProcess[str]:
        extra.setdefault("fix", str(self.fixes / "config-set.wasm"))
        extra.setdefault("wave_pause", 0)
        return self.play("defops.wasm.rollout", **extra)

    def ledger_path(self) -> Path:
        found = sorted(self.ledgers.glob("*.jsonl"))
        assert len(found) == 1, f"expected one ledger, found {found}"
        return found[0]

    def ledger(self) -> list[dict[str, t.Any]]:
        return [
            json.loads(line) for line in self.ledger_path().read_text().splitlines()
        ]

    def real_lines(self) -> list[dict[str, t.Any]]:
        return [x for x in self.ledger() if "kind" not in x and not x["dry_run"]]

    def defops(self, host: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), "--state-dir", str(self.state(host)), *args],
            check=False,
            capture_output=True,
            text=True,
        )

    def wait_for_ledger(
        self,
        proc: subprocess.Popen[str],
        predicate: t.Callable[[list[dict[str, t.Any]]], bool],
    ) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(
                    f"the playbook ended early:\n{proc.stdout.read() if proc.stdout else ''}"
                )
            found = list(self.ledgers.glob("*.jsonl"))
            if found:
                lines = [
                    json.loads(x)
                    for x in found[0].read_text().splitlines()
                    if x.endswith("}")
                ]
                if predicate(lines):
                    return
            time.sleep(0.05)
        raise AssertionError("the ledger never showed what was awaited")


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


@pytest.fixture
def fleet(
    tmp_path: Path, binary: Path, fixes: Path, collections: Path, sshd: Sshd
) -> Fleet:
    return Fleet(tmp_path, binary, fixes, collections, sshd)
