"""Root on a fleet host can't read the controller's keys (issue 17): the project folder with the
signing key, the fleet's state with the deploy key, are hidden from every host, and root there
can't undo that by any route it has: the overlay's lower layer (a bind or a new overlay of /),
umount of the masks, unshare -m then umount, the disk itself, /proc of other processes.

One host on its own /24 and bridge; the "project" is a folder of this test with a key of random
bytes (a real key would work the same way and is not needed). It is not under /tmp, as a real
project is not: a host's /tmp is a tmpfs of its own, which would hide it without a mask."""
import os
import secrets
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fleet_helpers import require_fleet_machine
from outpost.fleet import Fleet, FleetHost, Provision

ADDRESS = "198.19.90.11"
BRIDGE = "outpost-ha"


@pytest.fixture(scope="module")
def site():
    require_fleet_machine()
    project = Path(tempfile.mkdtemp(prefix="outpost-isolation-", dir="/var/tmp"))
    (project / "keys").mkdir()
    key = project / "keys" / "outpost.rsa"
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o600)
    state = project / "build" / "fleet"
    fleet = Fleet(state_dir=state, hosts=[FleetHost("iota", ADDRESS, "x86_64")],
                  known_hosts=state / "known_hosts", identity=state / "deploy_key",
                  provision=Provision(root_key=None), bridge=BRIDGE, private=(project,))
    try:
        fleet.up()
        yield fleet, key
    finally:
        fleet.down()
        shutil.rmtree(project)


def disk_of(path: Path) -> tuple[int, int, str]:
    """The block device (major, minor) of the filesystem holding `path`, and the path inside it."""
    device = os.stat(path).st_dev
    mountpoint = subprocess.run(["findmnt", "-n", "-o", "TARGET", "-T", str(path)],
                                capture_output=True, text=True, check=True).stdout.strip()
    return os.major(device), os.minor(device), "/" + str(path.relative_to(mountpoint))


def routes(key: Path) -> dict[str, str]:
    """Each way root on the host might try to read `key`, as a shell command. Each runs in a
    mount namespace of its own (unshare -m) but the first two, so one route's mounts don't
    help or hinder another; umount -l in the host's own namespace goes last."""
    q = shlex.quote
    project = str(key.parents[1])
    major, minor, inside = disk_of(key)
    scratch = "d=$(mktemp -d) &&"
    return {
        "the path itself": f"cat {q(str(key))}",
        "another process's root in /proc":
            f"for p in /proc/[0-9]*; do cat $p/root{q(str(key))}; done",
        # lowerdir=/ and the upper layer, in the project's build/fleet/hosts/<host>/upper.
        "the overlay's layers, named in mountinfo":
            "for layer in $(grep -o 'lowerdir=[^,]*\\|upperdir=[^,]*' /proc/self/mountinfo "
            f"| cut -d= -f2); do cat $layer{q(str(key))} $layer/../../../../../keys/outpost.rsa; "
            "done",
        "unshare -m, then umount the mask":
            f"unshare -m sh -c 'umount -l {q(project)}; cat {q(str(key))}'",
        "a bind of / (the lower layer without the masks)":
            f"unshare -m sh -c '{scratch} mount --bind / $d && cat $d{q(str(key))}'",
        "a recursive bind of /, its mask unmounted":
            f"unshare -m sh -c '{scratch} mount --rbind / $d && umount -l $d{q(project)}; "
            f"cat $d{q(str(key))}'",
        "a new overlay of / (overlayfs skips the masks, which are submounts)":
            f"unshare -m sh -c '{scratch} mkdir $d/u $d/w $d/m && mount -t overlay o -o "
            f"lowerdir=/,upperdir=$d/u,workdir=$d/w $d/m && cat $d/m{q(str(key))}'",
        "the disk, mounted":
            f"unshare -m sh -c '{scratch} mknod $d/disk b {major} {minor} && mkdir $d/fs && "
            f"mount $d/disk $d/fs && cat $d/fs{q(inside)}'",
        "umount -l of the mask": f"umount -l {q(project)}; cat {q(str(key))}",
    }


def test_root_on_a_host_reads_the_signing_key_by_no_route(site):
    fleet, key = site
    secret = key.read_text().strip()
    leaked = {}
    for route, command in routes(key).items():
        result = fleet.run_on("iota", ["sh", "-c", command])
        assert "nsenter" not in result.stderr, result.stderr  # the route ran on the host
        if secret in result.stdout:
            leaked[route] = result.stdout + result.stderr
    assert leaked == {}
