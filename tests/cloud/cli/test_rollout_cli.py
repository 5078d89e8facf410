"""``edgefleet rollout show --watch``: live bars per stage and site until the rollout ends; the text view."""

from __future__ import annotations

import io

from rich.console import Console

from cloud.cli import rollouts as cli


def _view(state: str, done: int) -> dict:
    return {
        "id": "r1", "release": "2.0.0", "state": state, "reason": "", "stage": "wave 1", "stages": ["canary", "wave 1"],
        "progress": {"canary": {"site-1": {"succeeded": 1}},
                     "wave 1": {"site-1": {"succeeded": done, "installing": 3 - done},
                                "site-2": {"succeeded": done, "rolled_back": 3 - done}}},
        "devices": [{"device_id": "d9", "site": "site-2", "stage": 1, "state": "rolled_back",
                     "reason": "health check failed", "attempts": 1}],
    }


def test_watch_polls_until_the_rollout_ends_and_draws_a_bar_per_stage_and_site(monkeypatch):
    views = [_view("running", 0), _view("running", 2), _view("completed", 3)]
    asked: list[str] = []

    def fetch(path, *a, **kw):
        asked.append(path)
        return views[min(len(asked) - 1, len(views) - 1)]

    out = io.StringIO()
    monkeypatch.setattr(cli.time, "sleep", lambda s: None)
    final = cli._watch(fetch, "r1", 0.0, console=Console(file=out, width=120, force_terminal=False))
    assert final["state"] == "completed" and asked == ["/v1/rollouts/r1"] * 3
    drawn = out.getvalue()
    assert "rollout r1 of 2.0.0: completed" in drawn
    assert "wave 1 site-2" in drawn and "3/3" in drawn and "canary site-1" in drawn
    text = cli._render_text(final)
    assert "canary   site-1" in text and "wave 1   site-2          3/3" in text
    assert "d9: rolled_back (health check failed)" in text
