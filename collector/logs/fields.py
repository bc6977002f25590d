"""Small pure readers of Postfix field values, said once for every stage.

Postfix writes a peer as ``name[address]``, ``name[address]:port`` (TCP, or a client with
``smtpd_client_port_logging``), ``name[private/socket]`` (LMTP on a UNIX socket), or a bare
service name (``local``, ``virtual``, ``none``). Every stage that needs the name or the address
of a peer, or the enhanced status code of a reply, reads it here.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# Enhanced status code (RFC 3463) inside an SMTP reply or a Postfix status text.
DSN_RE = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


class Endpoint(NamedTuple):
    """A peer as Postfix logs it: ``name[address]:port``."""

    name: str
    address: str | None  # None: a bare service name with no brackets
    port: int | None

    @property
    def label(self) -> str:
        """The name a person reads: the host name, or the address when Postfix had none."""
        if self.name and self.name != "unknown":
            return self.name
        return self.address or self.name


def parse_endpoint(text: str) -> Endpoint:
    """``mx.example.net[198.51.100.7]:25`` -> ``Endpoint("mx.example.net", "198.51.100.7", 25)``.

    The address is the text inside the *last* bracket pair (a name never holds brackets, an
    IPv6 address never holds ``]``); anything unparsable stays the name with no address.
    """
    i = text.rfind("[")
    j = text.find("]", i + 1) if i >= 0 else -1
    if i < 0 or j < 0:
        return Endpoint(text, None, None)
    rest = text[j + 1 :]
    port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    return Endpoint(text[:i], text[i + 1 : j], port)


def dsn_of(text: str) -> str | None:
    """The first enhanced status code in a reply text (``5.1.1``), or None."""
    m = DSN_RE.search(text)
    return m.group(1) if m else None
