"""The lego side of the local fleet: the cert host (the seed's home server, which runs lego),
and the `lego` user on each web host, which the cert host logs in as.

On the cert host: a `lego` user (its home holds the ACME account, the site's key and its own
SSH key) and Debian's lego, counted by apk as Chimera's lego package. lego's SSH key is made
here when the cert host first starts, and pinned here (keys.pin_user_keys), as the operator of
a real cert host pins it by hand. What runs there comes from the pipeline's `acme:setup` step,
as on a real cert host.

On a web host: a `lego` user whose SSH key is the cert host's and whose one program is
lego-gate (outpost/commands/acme.py): sshd's Match block here is what a real host's admin writes once,
as README.md says. The key file and lego-gate itself come from the pipeline's `gate:<host>`.
"""
from __future__ import annotations

from outpost.commands import acme
from outpost.fleet.provision import Role

# sshd for the lego user on a web host: the root-owned key file, only lego-gate, and nothing
# a shell account could otherwise open (terminal, forwarding, user rc files).
LEGO_SSHD = f"""\
Match User {acme.LEGO_USER}
    AuthorizedKeysFile {acme.LEGO_KEYS}
    ForceCommand {acme.GATE}
    PermitTTY no
    AllowTcpForwarding no
    AllowAgentForwarding no
    AllowStreamLocalForwarding no
    X11Forwarding no
    PermitTunnel no
    PermitUserRC no
"""


def cert_host_role() -> Role:
    # lego's SSH key is made here, and pinned here (keys.pin_user_keys), as host keys are.
    return Role(users=((acme.LEGO_USER, acme.LEGO_HOME),), provided=("lego",),
                keys=((acme.SSH_KEY, acme.LEGO_USER),))


def web_host_role() -> Role:
    return Role(users=((acme.LEGO_USER, acme.LEGO_HOME),), ssh_users=(acme.LEGO_USER,),
                sshd=LEGO_SSHD)
