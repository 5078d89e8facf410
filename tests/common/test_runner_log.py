"""NodeRunner logs a core's Log effects whatever their fields are called."""

from __future__ import annotations

import logging

import pytest

from common.effects import Log, Start
from common.runner import NodeRunner


class Says:
    def __init__(self, fields: dict) -> None:
        self.fields = fields

    def handle(self, event, now):  # noqa: ANN001
        return [Log("info", "artifact ready", self.fields)]


def test_a_field_named_like_a_log_record_attribute_is_logged_renamed(caplog: pytest.LogCaptureFixture) -> None:
    # "module" (an update module's name) raised KeyError inside logging and lost the rest of the effects
    log = logging.getLogger("test.runner")
    with caplog.at_level(logging.INFO, logger="test.runner"):
        NodeRunner(Says({"module": "swupdate", "name": "x", "version": "2.0.0"}), log=log).feed(Start())
    (record,) = [r for r in caplog.records if r.getMessage() == "artifact ready"]
    assert (record.module_, record.name_, record.version) == ("swupdate", "x", "2.0.0")
    assert record.module == "runner" and record.name == "test.runner"


def test_ordinary_fields_are_logged_as_they_are(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="test.runner"):
        NodeRunner(Says({"version": "2.0.0"}), log=logging.getLogger("test.runner")).feed(Start())
    assert [r.version for r in caplog.records if r.getMessage() == "artifact ready"] == ["2.0.0"]
