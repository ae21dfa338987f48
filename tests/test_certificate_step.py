"""certificate:<host> against real sockets on loopback, without a fleet: a host that does not
answer on port 443 (black-holed) is named as unreachable, and nothing is pushed to it."""
import socket

import pytest

from helpers import moved_fleet
from outpost import inventory, remote, tls
from outpost.errors import OutpostError
from outpost.steps import acme as acme_step

ADDRESSES = {"au": "127.0.95.11", "ny": "127.0.95.12", "fr": "127.0.95.13"}


@pytest.fixture
def inv(project):
    path = project / "inventory.toml"
    path.write_text(moved_fleet(path.read_text(), ADDRESSES, "outpost-e2"))
    loaded = inventory.load(path)
    kept = acme_step.issued_certificate(loaded)
    kept.parent.mkdir(parents=True)
    kept.write_bytes(tls.address_certificate(tls.ensure_ca(project / "keys/ca")[0].parent,
                                             ADDRESSES["au"])[0])
    return loaded


def test_a_black_holed_host_is_unreachable_not_serving_another_certificate(inv, monkeypatch):
    sent = []
    monkeypatch.setattr(remote, "run_script", lambda *args, **kwargs: sent.append(args))
    # au takes the connection (the kernel's backlog) and never says a word: the TLS
    # handshake times out, as with a host whose answers are dropped on the way.
    with socket.socket() as silent:
        silent.bind((ADDRESSES["au"], 443))
        silent.listen(8)
        with pytest.raises(OutpostError) as failed:
            acme_step.host_certificate(inv, inv.host("au"))
    assert str(failed.value) == (
        "host au, step certificate:au: cannot reach 127.0.95.11 port 443: no answer within "
        "5 s (timed out); what it serves is unknown, so nothing was pushed")
    assert sent == []  # no push through the cert host
