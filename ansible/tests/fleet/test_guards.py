"""End-to-end: what the rollout, rollback and verify playbooks refuse, and why."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import typing as t

import pytest
from conftest import HOSTS, Fleet, output


def test_an_interrupted_rollout_is_named_by_rollback_and_verify(fleet: Fleet) -> None:
    # The controller is lost in the middle of wave 2 (one host at a time): h2 and h3 changed,
    # and the playbook never got to record them.
    before = fleet.hashes()
    env = fleet.env()
    env["ANSIBLE_FORKS"] = "1"
    proc = subprocess.Popen(
        fleet.command(
            "defops.wasm.rollout",
            fix=str(fleet.fixes / "config-set.wasm"),
            wave_pause=0,
        ),
        cwd=fleet.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while fleet.hashes()["h3"] == before["h3"]:
            assert proc.poll() is None, "the rollout ended before h3 changed"
            assert time.monotonic() < deadline, "h3 never changed"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    changed = fleet.hashes()
    assert changed["h2"] != before["h2"] and changed["h3"] != before["h3"]
    assert changed["h8"] == before["h8"]
    recorded = {x["host"] for x in fleet.real_lines()}
    assert "h3" not in recorded, "the test must catch the playbook before h3's line"

    back = fleet.play("defops.wasm.rollback", ledger=str(fleet.ledger_path()))
    assert back.returncode != 0, output(back)
    named = re.search(r"no real-run line in the ledger for ([^\n(]*)", back.stdout)
    assert named, output(back)
    assert {"h2", "h3"} <= set(named.group(1).replace(",", " ").split()) - recorded
    assert fleet.hashes() == changed, "a refused rollback changes nothing"

    checked = fleet.play("defops.wasm.verify", ledger=str(fleet.ledger_path()))
    assert checked.returncode != 0, output(checked)
    assert (
        "no real-run line in the ledger for" in checked.stdout
        and "h3" in checked.stdout
    )


@pytest.mark.parametrize(
    "waves",
    [[], [0], [1, -2], ["x"], ["0%"], [True], {"a": 1}, [[1]], 0],
    ids=str,
)
def test_waves_that_are_not_host_counts_are_refused_before_anything(
    fleet: Fleet, waves: t.Any
) -> None:
    before = fleet.hashes()
    result = fleet.rollout(waves=waves)
    assert result.returncode != 0, output(result)
    assert (
        "give a non-empty list of positive host counts or percentages" in result.stdout
    )
    assert fleet.hashes() == before
    assert not list(fleet.ledgers.glob("*.jsonl")), "nothing recorded: nothing ran"


@pytest.mark.parametrize(
    ("waves", "expected"),
    [
        ("50%", [1, 1, 1, 1, 2, 2, 2, 2]),
        ([2, "25%"], [1, 1, 2, 2, 3, 3, 4, 4]),
    ],
    ids=str,
)
def test_the_ledger_records_the_batch_each_host_ran_in(
    fleet: Fleet, waves: t.Any, expected: list[int]
) -> None:
    result = fleet.rollout(waves=waves)
    assert result.returncode == 0, output(result)
    real = {x["host"]: x["wave"] for x in fleet.real_lines()}
    assert [real[h] for h in HOSTS] == expected


def test_a_ledger_line_without_its_head_is_refused_naming_the_host(
    fleet: Fleet,
) -> None:
    result = fleet.rollout()
    assert result.returncode == 0, output(result)
    changed = fleet.hashes()
    path = fleet.ledger_path()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    for line in lines:
        if line["host"] == "h5" and not line["dry_run"]:
            line["head"] = None
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))

    for playbook in ("defops.wasm.rollback", "defops.wasm.verify"):
        refused = fleet.play(playbook, ledger=str(path))
        assert refused.returncode != 0, output(refused)
        assert "without its run id or head in the ledger for h5:" in refused.stdout
    assert fleet.hashes() == changed


def test_an_existing_ledger_is_refused_before_anything(fleet: Fleet) -> None:
    fleet.ledgers.mkdir()
    ledger = fleet.ledgers / "taken.jsonl"
    ledger.write_text('{"host": "h1"}\n')
    before = fleet.hashes()
    result = fleet.rollout(rollout_id="taken")
    assert result.returncode != 0, output(result)
    assert "already exists: pick another rollout_id" in result.stdout
    assert fleet.hashes() == before
    assert ledger.read_text() == '{"host": "h1"}\n'


@pytest.mark.parametrize("kind", ["directory", "dangling symlink"])
def test_anything_at_the_off_switch_path_stops_the_rollout(
    fleet: Fleet, kind: str
) -> None:
    fleet.ledgers.mkdir()
    switch = fleet.ledgers / "STOP"
    if kind == "directory":
        switch.mkdir()
        reason = "pulled (a directory is there)"
    else:
        switch.symlink_to(fleet.root / "nowhere")
        reason = "pulled (a symlink to nowhere is there)"
    before = fleet.hashes()
    result = fleet.rollout()
    assert result.returncode != 0, output(result)
    where = fleet.ledgers.resolve() / "STOP"
    assert f"off-switch {where}" in result.stdout
    assert f"fleet off-switch {where}: {reason}" in result.stdout, output(result)
    assert fleet.hashes() == before


def test_the_signature_travels_whenever_it_is_next_to_the_fix(fleet: Fleet) -> None:
    # Every host's configuration requires approval; the play does not ask for it.
    key = fleet.root / "reviewer"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
    )
    signers = fleet.root / "allowed_signers"
    signers.write_text(
        "reviewer@example.org " + (fleet.root / "reviewer.pub").read_text()
    )
    config = fleet.root / "approval.toml"
    config.write_text(f'[approval]\nrequired = true\nallowed-signers = "{signers}"\n')
    signed = fleet.root / "fixes" / "config-set.wasm"
    signed.parent.mkdir()
    signed.write_bytes((fleet.fixes / "config-set.wasm").read_bytes())
    approve = subprocess.run(
        [str(fleet.binary), "approve", "--key", str(key), str(signed)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert approve.returncode == 0, approve.stderr
    for host in HOSTS:
        fleet.host_overrides[host] = {"defops_config": str(config)}

    result = fleet.rollout(fix=str(signed))
    assert result.returncode == 0, output(result)
    assert all(x["outcome"] == "applied" for x in fleet.real_lines())


def test_require_approval_false_from_the_command_line_is_false(fleet: Fleet) -> None:
    assert not (fleet.fixes / "config-set.wasm.sig").exists()
    result = fleet.rollout(require_approval="false")
    assert result.returncode == 0, output(result)
    assert all(x["outcome"] == "applied" for x in fleet.real_lines())
