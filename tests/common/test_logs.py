from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

import common.logs
from common.errors import ConfigError
from common.logs import JsonFormatter, TextFormatter, setup_logging


@pytest.fixture(autouse=True)
def restore_root() -> Iterator[None]:
    """Each test gets the root logger back as it found it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in root.handlers[:]:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def record(msg: str = "hello", created: float = 0.0, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("edge.test", logging.WARNING, __file__, 1, msg, None, None)
    rec.created = created
    rec.__dict__.update(extra)
    return rec


def test_all() -> None:
    assert set(common.logs.__all__) == {"FORMATS", "LEVELS", "JsonFormatter", "TextFormatter", "setup_logging"}
    assert all(hasattr(common.logs, name) for name in common.logs.__all__)


def test_json_line_has_the_fixed_fields() -> None:
    out = io.StringIO()
    setup_logging("info", "json", stream=out, node="gw-1")
    logging.getLogger("gateway.driver").info("device %s up", "dev-7")
    [doc] = lines(out)
    assert list(doc)[:5] == ["ts", "level", "logger", "msg", "node"]
    assert doc["level"] == "info"
    assert doc["logger"] == "gateway.driver"
    assert doc["msg"] == "device dev-7 up"
    assert doc["node"] == "gw-1"


def test_ts_is_iso8601_utc_with_milliseconds() -> None:
    assert json.loads(JsonFormatter().format(record(created=0.0)))["ts"] == "1970-01-01T00:00:00.000Z"
    ts = json.loads(JsonFormatter().format(record(created=1_700_000_000.123456)))["ts"]
    assert ts == "2023-11-14T22:13:20.123Z"
    parsed = datetime.fromisoformat(ts)
    assert parsed.utcoffset() == timedelta(0)
    assert parsed == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=timezone.utc)


def test_node_is_null_when_not_given() -> None:
    assert json.loads(JsonFormatter().format(record()))["node"] is None


def test_extra_fields_are_included() -> None:
    out = io.StringIO()
    setup_logging(stream=out, node="cloud")
    extra = {"gateway_id": "gw-1", "up_to": 42, "ok": True, "lag_s": 0.5}
    logging.getLogger("cloud.store").warning("stored", extra=extra)
    [doc] = lines(out)
    assert doc["gateway_id"] == "gw-1"
    assert doc["up_to"] == 42
    assert doc["ok"] is True
    assert doc["lag_s"] == 0.5


def test_extras_cannot_shadow_fixed_fields() -> None:
    doc = json.loads(JsonFormatter(node="gw-1").format(record(node="evil", ts="x", level="y", logger="z")))
    assert doc["node"] == "gw-1"
    assert doc["level"] == "warning"
    assert doc["logger"] == "edge.test"
    assert doc["ts"] == "1970-01-01T00:00:00.000Z"
    assert (doc["extra_node"], doc["extra_ts"], doc["extra_level"], doc["extra_logger"]) == ("evil", "x", "y", "z")


def test_unserializable_extras_become_strings() -> None:
    doc = json.loads(JsonFormatter().format(record(payload=b"\x00\x01", where=frozenset({1}))))
    assert doc["payload"] == "b'\\x00\\x01'"
    assert doc["where"] == "frozenset({1})"


def test_one_line_per_record_even_with_newlines_and_exceptions() -> None:
    out = io.StringIO()
    setup_logging(stream=out)
    log = logging.getLogger("edge")
    log.info("two\nlines", extra={"detail": "a\nb"})
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("failed")
    log.warning("with stack", stack_info=True)
    docs = lines(out)
    assert len(docs) == 3
    assert docs[0]["msg"] == "two\nlines"
    assert docs[0]["detail"] == "a\nb"
    assert docs[1]["level"] == "error"
    assert "ZeroDivisionError" in docs[1]["exc"]
    assert "Traceback" in docs[1]["exc"]
    assert "test_one_line_per_record" in docs[2]["stack"]


def test_level_filters() -> None:
    out = io.StringIO()
    setup_logging("warning", stream=out)
    log = logging.getLogger("edge")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [d["msg"] for d in lines(out)] == ["w", "e"]
    assert logging.getLogger().level == logging.WARNING


@pytest.mark.parametrize("level", ["DEBUG", "Debug", "debug"])
def test_level_is_case_insensitive(level: str) -> None:
    out = io.StringIO()
    setup_logging(level, stream=out)
    logging.getLogger("edge").debug("d")
    assert [d["level"] for d in lines(out)] == ["debug"]


def test_second_call_replaces_the_handler_and_keeps_others() -> None:
    other = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(other)
    first, second = io.StringIO(), io.StringIO()
    h1 = setup_logging(stream=first)
    h2 = setup_logging(stream=second, node="n2")
    logging.getLogger("edge").info("once")
    assert first.getvalue() == ""
    assert [d["msg"] for d in lines(second)] == ["once"]
    root = logging.getLogger()
    assert h2 in root.handlers and h1 not in root.handlers
    assert other in root.handlers
    assert other.stream.getvalue() == "once\n"


def test_stream_defaults_to_stderr_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = io.StringIO()
    monkeypatch.setattr(sys, "stderr", fake)
    setup_logging(node="d")
    logging.getLogger("edge").info("to stderr")
    assert [d["msg"] for d in lines(fake)] == ["to stderr"]


def test_text_format() -> None:
    out = io.StringIO()
    setup_logging("info", "text", stream=out, node="gw-1")
    logging.getLogger("gateway.outbox").warning("backlog %d", 12, extra={"device_id": "dev 7", "n": 3})
    [line] = out.getvalue().splitlines()
    assert line.endswith('WARNING  gateway.outbox [gw-1] backlog 12 device_id="dev 7" n=3')
    ts = line.split(" ", 1)[0]
    assert ts.endswith("Z")
    assert datetime.fromisoformat(ts).utcoffset() == timedelta(0)


def test_text_format_without_node_and_with_exception() -> None:
    rec = record("boom")
    try:
        raise KeyError("k")
    except KeyError:
        rec.exc_info = sys.exc_info()
    text = TextFormatter().format(rec)
    first, *rest = text.splitlines()
    assert first == "1970-01-01T00:00:00.000Z WARNING  edge.test boom"
    assert rest[0].startswith("Traceback") and "KeyError" in rest[-1]


@pytest.mark.parametrize("level", ["verbose", "", "warn "])
def test_unknown_level_is_a_config_error(level: str) -> None:
    with pytest.raises(ConfigError, match=rf"log level {level!r} is not one of debug, info, warning, error, critical"):
        setup_logging(level, stream=io.StringIO())


def test_unknown_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"log format 'yaml' is not one of json, text"):
        setup_logging("info", "yaml", stream=io.StringIO())
    assert not any(type(h).__module__ == "common.logs" for h in logging.getLogger().handlers)
