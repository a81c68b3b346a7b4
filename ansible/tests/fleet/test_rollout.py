"""End-to-end: the rollout, rollback, verify, pause and resume playbooks over eight hosts."""

from __future__ import annotations

import json
import re
import subprocess

from conftest import HOSTS, Fleet, output

WAVES = {"h1": 1, "h2": 2, "h3": 2, "h4": 2, "h5": 2, "h6": 2, "h7": 3, "h8": 3}


def expected_conf(host: str) -> str:
    return f"# {host}\nmax_conn = 50\nworkers = 4\n"


def test_ramp_up_changes_every_tree_as_the_dry_run_showed_in_waves_of_1_5_rest(
    fleet: Fleet,
) -> None:
    before = fleet.hashes()
    result = fleet.rollout()
    assert result.returncode == 0, output(result)

    for host in HOSTS:
        assert (fleet.app(host) / "app.conf").read_text() == expected_conf(host)
        assert (fleet.app(host) / "data.txt").read_text() == f"data of {host}\n"
    assert all(fleet.hashes()[h] != before[h] for h in HOSTS)
    # The dry-run's diff was shown for every host.
    for i, host in enumerate(HOSTS, start=1):
        assert f"-max_conn = {10 + i}" in result.stdout

    ledger = fleet.ledger()
    dry = [x for x in ledger if x["dry_run"]]
    assert sorted(x["host"] for x in dry) == HOSTS
    assert all(
        x["wave"] == 0 and x["outcome"] == "planned" and x["idempotent"] for x in dry
    )
    real = fleet.real_lines()
    assert sorted(x["host"] for x in real) == HOSTS
    assert {x["host"]: x["wave"] for x in real} == WAVES
    # Waves ran in order: every line of wave N before any of wave N+1.
    assert [x["wave"] for x in real] == sorted(x["wave"] for x in real)
    for line in real:
        assert (
            line["outcome"] == "applied"
            and line["changed"] == 1
            and line["check"] == "OK"
        )
        assert not line["stop"] and line["rc"] == 0
        # The ledger anchors the host's journal: it ends exactly at the head recorded.
        verified = fleet.defops(
            line["host"],
            "journal",
            "verify",
            line["run_id"],
            "--expect-head",
            line["head"],
        )
        assert verified.returncode == 0, verified.stderr

    checked = fleet.play("defops.wasm.verify", ledger=str(fleet.ledger_path()))
    assert checked.returncode == 0, output(checked)
    assert "failed=0" in checked.stdout and checked.stdout.count("ok: [h") >= 8


def test_a_second_rollout_changes_nothing_anywhere(fleet: Fleet) -> None:
    first = fleet.rollout(rollout_id="first")
    assert first.returncode == 0, output(first)
    after_first = fleet.hashes()

    second = fleet.rollout(rollout_id="second")
    assert second.returncode == 0, output(second)
    assert fleet.hashes() == after_first
    lines = [
        json.loads(x) for x in (fleet.ledgers / "second.jsonl").read_text().splitlines()
    ]
    real = [x for x in lines if not x["dry_run"]]
    assert sorted(x["host"] for x in real) == HOSTS
    assert all(x["changed"] == 0 and x["outcome"] == "not-needed" for x in real)
    assert all(x["changed"] == 0 for x in lines if x["dry_run"])
    # Ansible's own recap agrees: nothing changed on any host, bookkeeping included.
    recap = dict(
        re.findall(r"^(h\d+)\s+: ok=\d+\s+changed=(\d+)", second.stdout, re.MULTILINE)
    )
    assert recap == dict.fromkeys(HOSTS, "0"), second.stdout


def test_a_canary_refused_stops_the_rollout_before_any_other_host(fleet: Fleet) -> None:
    # The canary's change window is frozen: its dry-run passes, its real run is refused (exit 3).
    config = fleet.root / "frozen.toml"
    config.write_text(
        '[change-window]\ntime-zone = "UTC"\n'
        'freeze = [{ from = "2000-01-01 00:00", to = "2999-12-31", reason = "frozen for the test" }]\n'
    )
    fleet.host_overrides["h1"] = {"defops_config": str(config)}
    before = fleet.hashes()

    result = fleet.rollout()
    assert result.returncode != 0, output(result)
    assert fleet.hashes() == before, "no host may change when the canary is refused"
    real = fleet.real_lines()
    assert [x["host"] for x in real] == ["h1"]
    stop = real[0]
    assert (
        stop["wave"] == 1
        and stop["stop"]
        and stop["rc"] == 3
        and stop["outcome"] == "refused"
    )
    assert "frozen for the test" in stop["error"]
    assert "h1 (wave 1)" in result.stdout

    # The rollout stopped before the later waves, and the ledger says so: nothing to undo,
    # nothing missing.
    back = fleet.play("defops.wasm.rollback", ledger=str(fleet.ledger_path()))
    assert back.returncode == 0, output(back)
    assert fleet.hashes() == before


def test_a_canary_whose_monitoring_check_is_not_ok_stops_the_rollout(
    fleet: Fleet,
) -> None:
    # An earlier run's journal on the canary was tampered with: `defops-wasm check` says
    # CRITICAL after the canary's run, and the rollout goes no further.
    earlier = fleet.defops(
        "h1",
        "run",
        str(fleet.fixes / "config-set.wasm"),
        "--allow",
        str(fleet.app("h1")),
        "-p",
        f"file={fleet.app('h1') / 'app.conf'}",
        "-p",
        "key=workers",
        "-p",
        "value=4",
        "--dry-run",
        "--json",
    )
    assert earlier.returncode == 0, earlier.stderr
    journal = next((fleet.state("h1") / "runs").glob("*/journal.jsonl"))
    lines = journal.read_text().splitlines(keepends=True)
    lines[-1] = lines[-1].replace('"outcome":"', '"outcome":"x', 1)
    journal.write_text("".join(lines))
    before = fleet.hashes()

    result = fleet.rollout()
    assert result.returncode != 0, output(result)
    after = fleet.hashes()
    assert after["h1"] != before["h1"], "the canary ran"
    assert all(after[h] == before[h] for h in HOSTS if h != "h1")
    real = fleet.real_lines()
    assert [x["host"] for x in real] == ["h1"]
    assert (
        real[0]["outcome"] == "applied"
        and real[0]["check"] == "CRITICAL"
        and real[0]["stop"]
    )
    assert "DEFOPS CRITICAL" in real[0]["error"]


def test_a_file_drifting_on_host_2_stops_the_rollout_in_its_wave(fleet: Fleet) -> None:
    before = fleet.hashes()
    proc = fleet.start(
        "defops.wasm.rollout", fix=str(fleet.fixes / "config-set.wasm"), wave_pause=5
    )
    # During wave 1's pause, someone edits h2's config: the plan its dry-run showed no longer holds.
    fleet.wait_for_ledger(proc, lambda lines: any(x["wave"] == 1 for x in lines))
    conf = fleet.app("h2") / "app.conf"
    conf.write_text(conf.read_text().replace("workers = 4", "workers = 8"))
    drifted = fleet.hashes()["h2"]
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0, out

    after = fleet.hashes()
    assert after["h2"] == drifted, "the drifted host must be left as it was"
    assert after["h1"] != before["h1"]
    for host in ("h7", "h8"):
        assert after[host] == before[host], (
            f"{host} is in a later wave and must not change"
        )
    real = {x["host"]: x for x in fleet.real_lines()}
    assert "h7" not in real and "h8" not in real
    h2 = real["h2"]
    assert (
        h2["wave"] == 2 and h2["stop"] and h2["rc"] == 3 and h2["outcome"] == "refused"
    )
    assert "plan differs" in h2["error"]


def test_an_unreachable_host_in_a_wave_stops_the_rollout(
    fleet: Fleet, tmp_path
) -> None:
    from conftest import Sshd

    # h3 is reached over ssh through an sshd of its own, stopped during wave 1's pause. No
    # connection sharing, so a stopped sshd means an unreachable host.
    own = Sshd(tmp_path / "sshd-h3")
    try:
        fleet.host_overrides["h3"] = dict(own.host_vars(), ansible_timeout=3)
        env_args = "-o ControlMaster=no -o ControlPath=none"
        before = fleet.hashes()
        cmd_env = fleet.env()
        cmd_env["ANSIBLE_SSH_ARGS"] = env_args
        proc = subprocess.Popen(
            fleet.command(
                "defops.wasm.rollout",
                fix=str(fleet.fixes / "config-set.wasm"),
                wave_pause=5,
            ),
            cwd=fleet.root,
            env=cmd_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        fleet.wait_for_ledger(proc, lambda lines: any(x["wave"] == 1 for x in lines))
        own.stop()
        out = proc.communicate(timeout=300)[0]
    finally:
        own.stop()
    assert proc.returncode != 0, out
    after = fleet.hashes()
    assert after["h3"] == before["h3"]
    for host in ("h7", "h8"):
        assert after[host] == before[host], (
            f"{host} is in a later wave and must not change"
        )
    real = {x["host"]: x for x in fleet.real_lines()}
    assert "h7" not in real and "h8" not in real
    assert real["h3"]["outcome"] == "unreachable" and real["h3"]["stop"]
    assert not any(x["wave"] == 3 for x in real.values())


def test_an_unreachable_host_stops_the_rollout_at_the_dry_run(fleet: Fleet) -> None:
    fleet.extra_hosts["h9"] = {
        "ansible_connection": "ssh",
        "ansible_host": "192.0.2.1",  # TEST-NET-1: never answers
        "ansible_timeout": 2,
        "ansible_user": "root",
    }
    before = fleet.hashes()
    result = fleet.rollout()
    assert result.returncode != 0, output(result)
    assert fleet.hashes() == before
    assert fleet.real_lines() == []
    h9 = [x for x in fleet.ledger() if x["host"] == "h9"]
    assert h9 and h9[0]["stop"] and h9[0]["error"].startswith("unreachable")


def test_the_fleet_off_switch_pulled_during_wave_1_stops_before_wave_2(
    fleet: Fleet,
) -> None:
    before = fleet.hashes()
    proc = fleet.start(
        "defops.wasm.rollout", fix=str(fleet.fixes / "config-set.wasm"), wave_pause=5
    )
    fleet.wait_for_ledger(proc, lambda lines: any(x["wave"] == 1 for x in lines))
    (fleet.ledgers / "STOP").write_text("db failover in progress\n")
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0, out
    assert "db failover in progress" in out
    after = fleet.hashes()
    assert after["h1"] != before["h1"]
    assert all(after[h] == before[h] for h in HOSTS if h != "h1")
    assert [x["host"] for x in fleet.real_lines()] == ["h1"]
    stop = [x for x in fleet.ledger() if x.get("kind") == "stop"]
    assert len(stop) == 1 and stop[0]["wave"] == 2 and stop[0]["hosts"] == HOSTS[1:]

    # The hosts the rollout never reached are no gap in the ledger: the canary rolls back.
    back = fleet.play("defops.wasm.rollback", ledger=str(fleet.ledger_path()))
    assert back.returncode == 0, output(back)
    assert fleet.hashes() == before


def test_pause_playbook_pauses_every_host_and_a_rollout_then_refuses_everywhere(
    fleet: Fleet,
) -> None:
    paused = fleet.play("defops.wasm.pause", reason="db failover")
    assert paused.returncode == 0, output(paused)
    for host in HOSTS:
        status = fleet.defops(host, "status", "--json")
        assert '"paused":true' in status.stdout, (host, status.stdout)
        assert "db failover" in status.stdout
    again = fleet.play("defops.wasm.pause", reason="db failover")
    assert again.returncode == 0 and "changed=1" not in again.stdout, output(again)

    before = fleet.hashes()
    result = fleet.rollout()
    assert result.returncode != 0, output(result)
    assert fleet.hashes() == before
    lines = fleet.ledger()
    assert sorted(x["host"] for x in lines) == HOSTS
    assert all(
        x["outcome"] == "paused" and x["stop"] and "db failover" in x["error"]
        for x in lines
    )

    # The tool's own refusal, through the module: a real run on every host exits 5.
    play = fleet.root / "real.yml"
    play.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - defops.wasm.run: &run\n"
        "        fix: '{{ fix }}'\n        allow: '{{ allow }}'\n        params: '{{ params }}'\n"
        "        binary: '{{ defops_binary }}'\n        state_dir: '{{ defops_state_dir }}'\n"
        "      check_mode: true\n"
        "    - defops.wasm.run: *run\n      register: real\n      ignore_errors: true\n"
        "    - ansible.builtin.assert:\n        that: [real is failed, real.rc == 5, \"'paused' in real.msg\"]\n"
    )
    refused = fleet.play(str(play), fix=str(fleet.fixes / "config-set.wasm"))
    assert refused.returncode == 0, output(refused)
    assert refused.stdout.count("ignoring") == 8
    assert fleet.hashes() == before

    resumed = fleet.play("defops.wasm.resume")
    assert resumed.returncode == 0, output(resumed)
    for host in HOSTS:
        assert '"paused":false' in fleet.defops(host, "status", "--json").stdout


def test_fleet_rollback_puts_every_tree_back_and_a_second_changes_nothing(
    fleet: Fleet,
) -> None:
    before = fleet.hashes()
    result = fleet.rollout()
    assert result.returncode == 0, output(result)
    assert all(fleet.hashes()[h] != before[h] for h in HOSTS)
    ledger = str(fleet.ledger_path())

    back = fleet.play("defops.wasm.rollback", ledger=ledger)
    assert back.returncode == 0, output(back)
    assert fleet.hashes() == before
    lines = [x for x in fleet.ledger() if x.get("kind") == "rollback"]
    assert [x["wave"] for x in lines] == [3, 3, 2, 2, 2, 2, 2, 1], "newest wave first"
    assert all(x["outcome"] == "rolled-back" and x["undone"] == 1 for x in lines)
    # The ledger, rollback lines and all, still verifies.
    checked = fleet.play("defops.wasm.verify", ledger=ledger)
    assert checked.returncode == 0, output(checked)

    again = fleet.play("defops.wasm.rollback", ledger=ledger)
    assert again.returncode == 0, output(again)
    assert fleet.hashes() == before
    second = [x for x in fleet.ledger() if x.get("kind") == "rollback"][8:]
    assert len(second) == 8 and all(
        x["outcome"] == "nothing-to-undo" and x["undone"] == 0 for x in second
    )


def test_fleet_rollback_refuses_a_tampered_journal_and_names_the_host(
    fleet: Fleet,
) -> None:
    before = fleet.hashes()
    result = fleet.rollout()
    assert result.returncode == 0, output(result)
    changed = fleet.hashes()
    h4 = next(x for x in fleet.real_lines() if x["host"] == "h4")
    journal = fleet.state("h4") / "runs" / h4["run_id"] / "journal.jsonl"
    text = journal.read_text()
    lines = text.splitlines(keepends=True)
    # Record seq 1 (the fix's first message) rewritten: the chain no longer holds from there.
    assert '"seq":1,' in lines[1] and "max_conn was 14" in lines[1]
    lines[1] = lines[1].replace("max_conn was 14", "max_conn was 15")
    journal.write_text("".join(lines))
    assert journal.read_text() != text

    checked = fleet.play("defops.wasm.verify", ledger=str(fleet.ledger_path()))
    assert checked.returncode != 0
    assert re.search(r"failed: \[h4\]", checked.stdout), output(checked)
    assert "failed=1" in checked.stdout

    back = fleet.play("defops.wasm.rollback", ledger=str(fleet.ledger_path()))
    assert back.returncode != 0, output(back)
    assert "h4: rollback of" in back.stdout
    after = fleet.hashes()
    assert after["h4"] == changed["h4"], "a refused rollback changes nothing"
    assert after["h7"] == before["h7"] and after["h8"] == before["h8"], (
        "the newer wave went first"
    )
    assert after["h1"] == changed["h1"], "the rollback stopped before the canary"
    lines = [x for x in fleet.ledger() if x.get("kind") == "rollback"]
    refused = [x for x in lines if x["stop"]]
    assert [x["host"] for x in refused] == ["h4"]
    assert (
        refused[0]["rc"] == 3
        and "seq 1" in refused[0]["error"]
        and "tampered" in refused[0]["error"]
    )
    assert lines[-1]["host"] == "h4", "nothing after the refusal"


def test_install_role_is_idempotent(fleet: Fleet) -> None:
    play = fleet.root / "install.yml"
    play.write_text(
        "- hosts: h1,h2\n  gather_facts: false\n  roles:\n    - role: defops.wasm.install\n"
        "      defops_wasm_binary_src: '{{ src }}'\n"
        "      defops_wasm_binary_dest: '{{ defops_state_dir }}/../bin/defops-wasm'\n"
        "      defops_wasm_config_dest: '{{ defops_state_dir }}/../etc/config.toml'\n"
        '      defops_wasm_config_content: "[dry-run-first]\\nrequired = true\\n"\n'
    )
    first = fleet.play(str(play), src=str(fleet.binary))
    assert first.returncode == 0, output(first)
    for host in ("h1", "h2"):
        installed = fleet.state(host).parent / "bin" / "defops-wasm"
        assert installed.read_bytes() == fleet.binary.read_bytes()
        assert (
            fleet.state(host).parent / "etc" / "config.toml"
        ).read_text() == "[dry-run-first]\nrequired = true\n"
    second = fleet.play(str(play), src=str(fleet.binary))
    assert second.returncode == 0, output(second)
    assert re.findall(r"changed=(\d+)", second.stdout) == ["0", "0"], second.stdout


def test_approval_required_the_signature_travels_with_the_fix(fleet: Fleet) -> None:
    # A reviewer signs a copy of the fix; every host trusts the reviewer's key.
    key = fleet.root / "reviewer"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
    )
    signers = fleet.root / "allowed_signers"
    signers.write_text(
        "reviewer@example.org " + (fleet.root / "reviewer.pub").read_text()
    )
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
    unsigned = fleet.root / "unsigned" / "config-set.wasm"
    unsigned.parent.mkdir()
    unsigned.write_bytes(signed.read_bytes())
    before = fleet.hashes()

    refused = fleet.rollout(
        fix=str(unsigned), require_approval=True, allowed_signers=str(signers)
    )
    assert refused.returncode != 0, output(refused)
    assert fleet.hashes() == before
    assert "signature" in refused.stdout and "not on the controller" in refused.stdout

    result = fleet.rollout(
        fix=str(signed), require_approval=True, allowed_signers=str(signers)
    )
    assert result.returncode == 0, output(result)
    for host in HOSTS:
        assert (fleet.app(host) / "app.conf").read_text() == expected_conf(host)
    # The copies on the hosts were removed: nothing of the fix is left in the temporary directories.
    remote_tmp = fleet.root / "remote-tmp"
    assert remote_tmp.is_dir()
    assert not list(remote_tmp.rglob("config-set.wasm*"))
