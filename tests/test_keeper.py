"""`[ssh] keep_connection` on a real local fleet: a run leaves each host's login in a keeper
(outpost.keeper), the next run within the window logs in no more, for its scripts and its
rsync alike; without the setting no keeper is left; a keeper ends after its idle time.

One three-host fleet for the module; the tests run in order."""
import re
import subprocess

import pytest

from fleet_helpers import accepted_connections
from helpers import deployed_site, ran_tasks, run_doit, wait_for
from outpost import inventory, keeper, relay

HOSTS = ("au", "fr", "ny")
ADDRESSES = {"au": "198.19.110.11", "ny": "198.19.110.12", "fr": "198.19.110.13"}


@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    project, inv, hosts_fleet = deployed_site(tmp_path_factory, request, "keeper", ADDRESSES,
                                              "op110")
    request.addfinalizer(lambda: end_keepers(project))
    return project, hosts_fleet


def keep(project, seconds):
    path = project / "inventory.toml"
    text = re.sub(r"\nkeep_connection = \d+", "", path.read_text())
    path.write_text(text.replace("\ncommand_timeout = ", f"\nkeep_connection = {seconds}\n"
                                                         "command_timeout = ", 1))
    inv = inventory.load(path)
    assert inv.ssh.keep_connection == seconds
    return inv


def keepers(inv) -> dict:
    """{host: pid} of the keepers alive for this inventory's hosts and setting."""
    found = {}
    for host in inv.hosts:
        socket_path = keeper.folder() / (keeper.socket_name(host, inv.ssh) + ".sock")
        proc = subprocess.run(["pgrep", "-f", "--", f"outpost.keeper {socket_path} "],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            found[host.name] = int(proc.stdout.split()[0])
    return found


def any_keeper_for_these_hosts() -> list[str]:
    proc = subprocess.run(["pgrep", "-af", "--", r"outpost\.keeper .* deploy@198\.19\.110\."],
                          capture_output=True, text=True)
    return proc.stdout.splitlines()


def end_keepers(project):
    """The module's keepers that would otherwise idle out after it."""
    for seconds in (60, 1):
        for pid in keepers(keep(project, seconds)).values():
            subprocess.run(["kill", str(pid)], check=False)


def logins(hosts_fleet) -> dict:
    return {name: accepted_connections(hosts_fleet, name) for name in HOSTS}


def new_logins(before, hosts_fleet) -> dict:
    after = logins(hosts_fleet)
    return {name: after[name] - before[name] for name in HOSTS}


def edit_content(project, line):
    entry = sorted((project / "content/entries").glob("*.txt"))[0]
    entry.write_text(entry.read_text() + f"\n{line}\n")


def bump_app(project):
    template = project / "cports-overlay/user/linkedlist/template.py"
    template.write_text(re.sub(r"^pkgrel = (\d+)", lambda m: f"pkgrel = {int(m.group(1)) + 1}",
                               template.read_text(), flags=re.M))


def test_without_the_setting_no_keeper_outlives_a_run(site):
    project, hosts_fleet = site
    edit_content(project, "Pushed without a kept connection.")
    before = logins(hosts_fleet)
    run_doit(project, "deploy")
    assert new_logins(before, hosts_fleet) == {name: 1 for name in HOSTS}
    assert any_keeper_for_these_hosts() == []


def test_a_second_run_within_the_window_logs_in_no_more(site):
    project, hosts_fleet = site
    inv = keep(project, 60)
    edit_content(project, "Pushed by a run that leaves its connections kept.")
    before = logins(hosts_fleet)
    run_doit(project, "deploy")
    assert new_logins(before, hosts_fleet) == {name: 1 for name in HOSTS}
    assert sorted(keepers(inv)) == sorted(HOSTS)  # each outlives the run

    # An app change: sync's bundle and rsync, the upgrade and its gate, all on the kept logins.
    bump_app(project)
    before = logins(hosts_fleet)
    proc = run_doit(project, "deploy")
    ran = ran_tasks(proc.stdout)
    assert all(f"{step}:{name}" in ran for step in ("sync", "upgrade") for name in HOSTS)
    assert new_logins(before, hosts_fleet) == {name: 0 for name in HOSTS}


def test_the_keepers_socket_folder_is_this_users_alone(site):
    folder = keeper.folder()
    assert folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o755)
    try:
        with pytest.raises(keeper.RemoteError, match="nobody else can enter"):
            keeper.folder()
    finally:
        folder.chmod(0o700)


def test_a_keeper_ends_after_its_idle_time(site):
    project, hosts_fleet = site
    inv = keep(project, 1)  # another setting: other keepers
    edit_content(project, "Pushed by a run whose connections are kept for a second.")
    names = {host.name: keeper.folder() / keeper.socket_name(host, inv.ssh) for host in inv.hosts}
    assert not any(name.with_suffix(".log").exists() for name in names.values())
    before = logins(hosts_fleet)
    run_doit(project, "deploy")
    assert new_logins(before, hosts_fleet) == {name: 1 for name in HOSTS}
    # Each host's keeper was started for this setting (its log is made when it starts) ...
    assert all(name.with_suffix(".log").exists() for name in names.values())
    # ... and ends once no run has used it for a second.
    wait_for(lambda: keepers(inv) == {}, "the keepers to end after their idle second")
    for host in inv.hosts:
        socket_path = names[host.name].with_suffix(".sock")
        assert not socket_path.exists()
        with pytest.raises(relay.Lost):
            relay.exchange(str(socket_path), "true", b"", 5)
