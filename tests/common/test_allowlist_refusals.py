"""A refused handshake is visible to the server's owner: logged once per key per minute, with the key and the
line that admits it (issue 15, point 4)."""

from __future__ import annotations

import logging

import zmq

from common.keys import Allowlist


def test_a_refused_key_is_logged_once_a_minute_with_what_admits_it(tmp_path, caplog, monkeypatch) -> None:
    allow = Allowlist(tmp_path / "allowed_gateways")
    stranger, other = zmq.curve_keypair()[0], zmq.curve_keypair()[0]
    clock = [1000.0]
    monkeypatch.setattr("common.keys.time.monotonic", lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="common.keys"):
        for _ in range(5):  # a gateway retrying its handshake
            assert allow.callback("*", stranger) is False
        allow.callback("*", other)
        clock[0] += 61.0
        allow.callback("*", stranger)
    told = [r for r in caplog.records if "refused a CurveZMQ handshake" in r.getMessage()]
    assert [r.key for r in told] == [stranger.decode(), other.decode(), stranger.decode()]  # type: ignore[attr-defined]
    assert str(tmp_path / "allowed_gateways") in told[0].admit and stranger.decode() in told[0].admit  # type: ignore[attr-defined]
    assert allow.refused == 7
    allow.add(stranger, "gw-1 site-1")  # what the log said to do admits it
    assert allow.callback("*", stranger) is True
