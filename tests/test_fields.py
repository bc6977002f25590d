"""The field readers every stage shares."""

from __future__ import annotations

import pytest

from collector.logs.fields import Endpoint, dsn_of, parse_endpoint


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mx.example.net[198.51.100.7]:25", Endpoint("mx.example.net", "198.51.100.7", 25)),
        ("mail.example.org[203.0.113.9]", Endpoint("mail.example.org", "203.0.113.9", None)),
        ("unknown[2001:db8::1]:587", Endpoint("unknown", "2001:db8::1", 587)),
        ("mailbox[private/dovecot-lmtp]", Endpoint("mailbox", "private/dovecot-lmtp", None)),
        ("local", Endpoint("local", None, None)),
        ("none", Endpoint("none", None, None)),
        ("", Endpoint("", None, None)),
        ("broken[198.51.100.7", Endpoint("broken[198.51.100.7", None, None)),
        ("x[1.2.3.4]:notaport", Endpoint("x", "1.2.3.4", None)),
    ],
)
def test_parse_endpoint(text: str, expected: Endpoint) -> None:
    assert parse_endpoint(text) == expected


def test_label_prefers_the_name_and_falls_back_to_the_address() -> None:
    assert parse_endpoint("mx.example.net[198.51.100.7]:25").label == "mx.example.net"
    assert parse_endpoint("unknown[198.51.100.7]:25").label == "198.51.100.7"
    assert parse_endpoint("local").label == "local"


def test_dsn_of() -> None:
    assert dsn_of("host x said: 550 5.1.1 <a@b>: Recipient address rejected") == "5.1.1"
    assert dsn_of("Recipient address rejected: 4.7.1 greylisted") == "4.7.1"
    assert dsn_of("no code here 550") is None
    assert dsn_of("version 15.1.1234") is None
