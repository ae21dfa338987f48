"""Least privilege on the real local fleet: what the deploy user, the app's user and lego can do
on a host after `doit deploy`, tried with their own keys and accounts.

- Each doas rule on every host is matched by one entry of RULES, whose test tries it with
  other arguments: a rule no entry knows fails the suite (a new rule needs its test).
- The three escalations that once gave root (issue 12) fail, and the helper refuses a bundle
  it can't trust.
- The app user's symlink attack on the content folder changes nothing outside it.
"""
import re
import subprocess

import pytest

from fleet_helpers import ssh
from helpers import deployed_site, run_doit
from outpost.commands import bundle

ADDRESSES = {"au": "198.19.87.11", "ny": "198.19.87.12", "fr": "198.19.87.13"}
WEB_HOSTS = tuple(ADDRESSES)
REFUSED = "Operation not permitted"


@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    return deployed_site(tmp_path_factory, request, "privilege", ADDRESSES, "outpost-ta")


def as_user(hosts_fleet, name, user, command):
    """Run a shell command on a host as `user` (not over SSH: the app's user and lego have no
    login shell of their own)."""
    return hosts_fleet.run_on(name, ["runuser", "-u", user, "--", "sh", "-c", command],
                              capture_output=True, text=True)


def doas_rules(hosts_fleet, name) -> list[tuple[str, str, list[str]]]:
    """(user, as, argv) of each rule in the host's /etc/doas.conf."""
    text = hosts_fleet.run_on(name, ["cat", "/etc/doas.conf"], capture_output=True,
                              text=True).stdout
    rules = []
    for line in text.splitlines():
        match = re.fullmatch(r"permit nopass (\S+) as (\S+) cmd (\S+) args ?(.*)", line)
        if match:
            user, target, command, args = match.groups()
            rules.append((user, target, [command, *args.split()]))
        else:
            assert line.startswith("#") or not line.strip(), f"{name}: unexpected rule {line!r}"
    return rules


def digest(hosts_fleet, name, path):
    return hosts_fleet.run_on(name, ["sha256sum", path], capture_output=True, text=True).stdout


# Every kind of rule a host may have: a pattern over "user as target: argv", and more uses of
# it that must be refused (beyond the generic ones: an extra argument, the last one changed,
# none at all).
RULES = {
    r"deploy as root: /usr/libexec/outpost/apply": [
        "doas -n /usr/libexec/outpost/apply /etc/doas.conf"],
    r"deploy as root: apk update": ["doas -n apk update --allow-untrusted"],
    r"deploy as root: apk add linkedlist=\S+": [
        "doas -n apk add linkedlist", "doas -n apk add --allow-untrusted linkedlist",
        "doas -n apk add -u linkedlist", "doas -n apk add other"],
    r"deploy as root: rm -f /etc/default/linkedlist.apk-new": [
        "doas -n rm -f /etc/doas.conf"],
    r"deploy as root: dinitctl (restart --ignore-unstarted|start|enable|reload|stop) linkedlist": [
        "doas -n dinitctl stop sshd", "doas -n dinitctl restart sshd"],
    r"deploy as root: tail -n 20 /var/log/linkedlist.log": ["doas -n tail -n 20 /etc/shadow"],
    r"deploy as lego: /usr/libexec/outpost/acme (key|issue|issue-again|show|push \S+)": [
        "doas -n -u lego /usr/libexec/outpost/acme push evil",
        "doas -n -u lego sh -c id"],
    r"lego as _gdnsd: /usr/libexec/outpost/acme-challenge": [
        "doas -n -u _gdnsd sh -c id"],
    r"lego as root: dinitctl signal HUP nginx": ["doas -n dinitctl signal KILL sshd"],
}


def all_rules(site):
    project, inv, hosts_fleet = site
    return [(name, rule) for name in (*WEB_HOSTS, inv.acme.cert_host.name)
            for rule in doas_rules(hosts_fleet, name)]


def rule_text(rule) -> str:
    user, target, argv = rule
    return f"{user} as {target}: {' '.join(argv)}"


def test_every_doas_rule_is_known_here(site):
    unknown = [f"{name}: {rule_text(rule)}" for name, rule in all_rules(site)
               if not any(re.fullmatch(p, rule_text(rule)) for p in RULES)]
    assert unknown == [], "doas rules with no test in tests/test_privilege.py RULES"


def other_uses(rule) -> list[str]:
    """The rule's command with an argument more, its last argument changed, and none."""
    user, target, argv = rule
    prefix = "doas -n" + ("" if target == "root" else f" -u {target}")
    uses = [f"{prefix} {' '.join(argv)} /etc/shadow"]
    if len(argv) > 1:
        uses += [f"{prefix} {' '.join(argv[:-1])} /etc/shadow", f"{prefix} {argv[0]}"]
    return uses


def run_as_rule_user(site, name, user, command):
    project, inv, hosts_fleet = site
    if user == "deploy":
        return ssh(hosts_fleet, name, command)  # with the deploy key, as the pipeline logs in
    return as_user(hosts_fleet, name, user, command)


@pytest.mark.parametrize("pattern", list(RULES))
def test_each_doas_rule_allows_only_its_own_arguments(site, pattern):
    matched = [(name, rule) for name, rule in all_rules(site)
               if re.fullmatch(pattern, rule_text(rule))]
    assert matched, f"no host has a rule {pattern!r}: remove it from RULES"
    for name, rule in matched:
        for command in other_uses(rule) + RULES[pattern]:
            result = run_as_rule_user(site, name, rule[0], command)
            assert result.returncode != 0 and REFUSED in result.stderr, (name, command,
                                                                         result.stderr)


def test_the_escalations_of_issue_12_fail(site):
    project, inv, hosts_fleet = site
    before = digest(hosts_fleet, "au", "/etc/doas.conf")
    # A module nginx would load as root, a doas.conf, and a "certificate" that is /etc/shadow.
    attempts = ssh(hosts_fleet, "au", """
        mkdir -p ~/stage/etc/nginx && cd ~/stage
        echo 'permit nopass deploy as root' > etc/doas.conf
        echo 'load_module /home/deploy/evil.so; events {}' > etc/nginx/nginx.conf
        ln -sf /etc/shadow etc/site.pem
        for command in "install -m 400 $PWD/etc/doas.conf /etc/doas.conf" \
                       "nginx -t -c $PWD/etc/nginx/nginx.conf" \
                       "install -m 644 $PWD/etc/site.pem /etc/nginx/outpost/site.pem" sh; do
            doas -n $command && echo "ALLOWED: $command"
        done
        cat /etc/shadow /etc/nginx/outpost/site.pem 2>/dev/null && echo READ
        true""")
    assert "ALLOWED" not in attempts.stdout and "READ" not in attempts.stdout, attempts.stdout
    assert attempts.stderr.count(REFUSED) == 4, attempts.stderr
    assert digest(hosts_fleet, "au", "/etc/doas.conf") == before


def test_the_helper_applies_only_bundles_signed_with_the_repositorys_key(site, tmp_path):
    project, inv, hosts_fleet = site
    from outpost import apk
    apk.generate_key(tmp_path / "other.rsa")
    evil = bundle.Bundle("au", "sync", files=(
        bundle.HostFile("/etc/doas.conf", 0o400, b"permit nopass deploy as root\n"),))
    before = digest(hosts_fleet, "au", "/etc/doas.conf")
    for data in (bundle.signed(evil, tmp_path / "other.rsa", 2**62), bundle.archive(evil, 2**62)):
        result = subprocess.run(
            ["ssh", "-F", "/dev/null", "-i", str(hosts_fleet.identity), "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={hosts_fleet.known_hosts}", "-o", "IdentitiesOnly=yes",
             f"deploy@{ADDRESSES['au']}", "doas -n /usr/libexec/outpost/apply"],
            input=data, capture_output=True, timeout=30)
        assert result.returncode == bundle.EXITS["bad"], result.stderr
    assert digest(hosts_fleet, "au", "/etc/doas.conf") == before
    # The real key's bundle for another host is refused too.
    other_host = bundle.signed(bundle.Bundle("ny", "sync", files=evil.files),
                               inv.repository.signing_key, 2**62)
    result = subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(hosts_fleet.identity), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={hosts_fleet.known_hosts}", "-o", "IdentitiesOnly=yes",
         f"deploy@{ADDRESSES['au']}", "doas -n /usr/libexec/outpost/apply"],
        input=other_host, capture_output=True, timeout=30)
    assert result.returncode == bundle.EXITS["bad"] and b"for host 'ny'" in result.stderr
    assert digest(hosts_fleet, "au", "/etc/doas.conf") == before


def test_the_deploy_key_is_not_roots(site):
    project, inv, hosts_fleet = site
    result = ssh(hosts_fleet, "au", "true", user="root")
    assert result.returncode == 255 and "Permission denied" in result.stderr


def test_the_app_user_cannot_steer_a_deploy_through_its_own_folder(site):
    """The attack of issue 12: content under the app's home, which the app replaces with a
    link to another folder. The deploy refuses before it changes anything outside."""
    project, inv, hosts_fleet = site
    content_dir = inv.packages[0].content_dir
    # The app can't touch the content folder or its parent (both not its own).
    tried = as_user(hosts_fleet, "fr", "_linkedlist",
                    f"mv {content_dir} {content_dir}.x; ln -s /etc {content_dir}/current.x;"
                    f" touch {content_dir}/x")
    assert tried.stderr.count("Permission denied") == 3, tried.stderr

    # A content_dir under the app's own home, as the seed had it.
    victim = "/var/lib/victim"
    hosts_fleet.run_on("fr", ["sh", "-c", f"mkdir -p {victim} && echo secret > {victim}/file"])
    as_user(hosts_fleet, "fr", "_linkedlist", f"rm -rf /var/lib/linkedlist/content; "
                                              f"ln -s {victim} /var/lib/linkedlist/content")
    toml = project / "inventory.toml"
    original = toml.read_text()
    toml.write_text(original.replace(f'content_dir = "{content_dir}"',
                                     'content_dir = "/var/lib/linkedlist/content"'))
    try:
        result = run_doit(project, "sync:fr", check=False)
    finally:
        toml.write_text(original)
    assert result.returncode != 0
    assert ("/var/lib/linkedlist is not a folder that only root can write"
            in result.stdout + result.stderr), result.stdout
    owner = hosts_fleet.run_on("fr", ["stat", "-c", "%U %a", victim, f"{victim}/file"],
                               capture_output=True, text=True).stdout
    assert owner.split("\n")[:2] == ["root 755", "root 644"]
    assert hosts_fleet.run_on("fr", ["cat", f"{victim}/file"], capture_output=True,
                              text=True).stdout == "secret\n"
    # The real content folder is as it was, and the next run is whole again.
    run_doit(project, "sync:fr")


def test_a_host_without_its_bootstrap_says_how_to_run_it_as_root(site):
    project, inv, hosts_fleet = site
    toml = project / "inventory.toml"
    original = toml.read_text()
    hosts_fleet.run_on("ny", ["sh", "-c", "echo old > /etc/outpost/bootstrap"])
    toml.write_text(re.sub(r'bootstrap_identity = "[^"]+"\n', "", original))
    try:
        result = run_doit(project, "bootstrap:ny", check=False)
    finally:
        toml.write_text(original)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "host ny: needs its bootstrap, as root (bootstrap: old" in out
    assert f"root@{ADDRESSES['ny']} sh < " in out and "build/bootstrap/ny.sh" in out
    assert (project / "build/bootstrap/ny.sh").read_text().startswith("set -eu\n")
    # With root's key, the bootstrap runs again and the host is current.
    run_doit(project, "bootstrap:ny")
    assert hosts_fleet.run_on("ny", ["cat", "/etc/outpost/bootstrap"], capture_output=True,
                              text=True).stdout.strip() != "old"
