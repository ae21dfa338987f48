"""The SSH connection to a host, as Fabric opens it for outpost.remote and outpost.keeper: the
host key pinned to the inventory's known_hosts (an unknown or changed key is refused before
anything is sent), the inventory's identity and timeouts only, and every failure said as a
RemoteError that names the host. Fabric and paramiko are imported only when a connection is
opened, so a run that finds everything up to date never loads them."""
from __future__ import annotations

from outpost.errors import OutpostError
from outpost.openssh import (auth_failed, changed_host_key, fingerprint, key_kind,
                             missing_identity, reason, unknown_host_key, unreachable)


class RemoteError(OutpostError):
    """A host could not be reached, was refused, or a step on it failed (then `exited` is the
    script's exit status)."""

    def __init__(self, message: str, exited: int | None = None):
        super().__init__(message)
        self.exited = exited


class ScriptFailed(RemoteError):
    """The host ran the script, and it exited with a status the caller did not expect
    (`exited`)."""

    def __init__(self, message: str, exited: int):
        super().__init__(message, exited)


def _refusing_policy(host, ssh):
    """paramiko's RejectPolicy, refusing a host key that known_hosts doesn't pin with
    Outpost's message: the key the host presented, and how to check it on its console."""
    from paramiko import RejectPolicy

    class RefuseUnpinned(RejectPolicy):
        def missing_host_key(self, client, hostname, key):
            raise RemoteError(unknown_host_key(host, ssh, (key_kind(key.get_name()),
                                                            fingerprint(key.asbytes()))))

    return RefuseUnpinned()


def pinned_connection(host, ssh, where):
    """A Fabric connection to host, not yet open, that accepts only the host key pinned in
    ssh.known_hosts: its client's policy refuses any other by itself."""
    from fabric import Config, Connection
    from paramiko import SSHConfig
    from paramiko.hostkeys import InvalidHostKey

    if not ssh.identity.is_file():
        raise RemoteError(f"{where}: {missing_identity(ssh)}")
    timeout = ssh.connect_timeout
    connection = Connection(
        host.address, user=host.user, port=host.port,
        # An empty SSHConfig and lazy: no ~/.ssh/config and no fabric.yaml, so the inventory
        # alone says how to connect (the rsync side passes `-F /dev/null` likewise).
        config=Config(ssh_config=SSHConfig(), lazy=True),
        connect_kwargs={"key_filename": str(ssh.identity), "look_for_keys": False,
                        "allow_agent": False, "timeout": timeout, "banner_timeout": timeout,
                        "auth_timeout": timeout},
    )
    # Fabric's Connection.__init__ sets AutoAddPolicy and loads no known_hosts (fabric
    # connection.py), i.e. it accepts any key. Connection.open() doesn't touch the policy
    # again, so replacing it here holds.
    try:
        connection.client.load_host_keys(str(ssh.known_hosts))
    except OSError as error:
        raise RemoteError(f"{where}: cannot read the pinned host keys in {ssh.known_hosts}: "
                          f"{error.strerror or error}") from None
    except InvalidHostKey as error:
        raise RemoteError(f"{where}: {ssh.known_hosts}: not a valid known_hosts line: "
                          f"{error.line!r}") from None
    connection.client.set_missing_host_key_policy(_refusing_policy(host, ssh))
    return connection


def open_connection(host, ssh, where):
    connection = pinned_connection(host, ssh, where)
    try:
        connection.open()
    except Exception as error:
        connection.close()
        raise connection_error(error, host, ssh, where) from None
    return connection


def connection_error(error: Exception, host, ssh, where) -> Exception:
    """The RemoteError for an exception from paramiko or the socket layer; anything else
    (a bug, not a host problem) is returned unchanged, to be raised with its traceback."""
    import socket

    from paramiko import AuthenticationException, BadHostKeyException, SSHException

    if isinstance(error, BadHostKeyException):
        return RemoteError(changed_host_key(host, ssh, (key_kind(error.key.get_name()),
                                                         fingerprint(error.key.asbytes()))))
    if isinstance(error, AuthenticationException):
        return RemoteError(f"{where}: " + auth_failed(host, ssh))
    if isinstance(error, (socket.timeout, TimeoutError)):
        return RemoteError(f"{where}: " + unreachable(host, f"no answer within "
                                                             f"{ssh.connect_timeout:g} s"))
    if isinstance(error, SSHException):
        # A silent or slow server: paramiko either times out reading the banner or, when
        # start_client gives up first, fails the next call with "No existing session".
        if "banner" in str(error) or str(error) == "No existing session":
            return RemoteError(f"{where}: " + unreachable(
                host, f"no SSH handshake within {ssh.connect_timeout:g} s"))
        return RemoteError(f"{where}: SSH failed: {error}")
    if isinstance(error, (OSError, EOFError)):
        # NoValidConnectionsError (refused, no route) is an OSError holding one per address.
        causes = getattr(error, "errors", None)
        first = next(iter(causes.values())) if causes else error
        return RemoteError(f"{where}: " + unreachable(host, reason(first)))
    return error
