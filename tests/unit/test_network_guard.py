"""The suite's own guard (tests/conftest.py): nothing leaves 127.0.0.1, lookups included."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests import conftest


def _take_violations(since: int) -> list[str]:
    """The violations this test caused on purpose (so that its teardown does not fail)."""
    taken = conftest._violations[since:]
    del conftest._violations[since:]
    return taken


def test_a_lookup_of_a_name_is_refused_without_asking_any_resolver() -> None:
    start = len(conftest._violations)
    with pytest.raises(socket.gaierror, match="only localhost allowed"):
        socket.getaddrinfo("hooks.example.com", 443)
    with pytest.raises(socket.gaierror):
        socket.gethostbyname("push.example.com")
    assert _take_violations(start) == ["lookup of 'hooks.example.com'",
                                       "lookup of 'push.example.com'"]


async def test_the_event_loops_lookups_are_guarded_too() -> None:
    start = len(conftest._violations)
    with pytest.raises(socket.gaierror):
        await asyncio.get_running_loop().getaddrinfo("metadata.google.internal", 80)
    assert _take_violations(start) == ["lookup of 'metadata.google.internal'"]


def test_localhost_and_literal_addresses_resolve() -> None:
    assert socket.getaddrinfo("localhost", 80)
    assert socket.getaddrinfo("127.0.0.1", 80)


def test_a_connection_to_a_non_loopback_address_is_refused_before_it_is_made() -> None:
    start = len(conftest._violations)
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError, match="only loopback"):
        sock.connect(("169.254.169.254", 80))
    assert _take_violations(start) == ["('169.254.169.254', 80)"]
