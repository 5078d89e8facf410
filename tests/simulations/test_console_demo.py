"""``edgefleet demo --console``: a fleet with a rollout in progress, its console's address and a token
printed, running until Ctrl-C, then every process stopped (real processes)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import httpx
import pytest

pytestmark = pytest.mark.integration


def test_demo_console_prints_where_to_log_in_and_runs_until_ctrl_c(tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "common", "demo", "--console", "--json", "--workdir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line, f"the demo printed nothing and exited {proc.poll()}: {proc.stderr.read()[-2000:]}"  # type: ignore[union-attr]
        info = json.loads(line)
        console, auth = info["console"], {"Authorization": f"Bearer {info['token']}"}
        assert httpx.get(console + "login", timeout=30).status_code == 200
        assert httpx.get(console + "v1/me", headers=auth, timeout=30).json()["role"] == "admin"
        assert httpx.get(console + "v1/me", headers={"Authorization": f"Bearer {info['viewer_token']}"},
                         timeout=30).json()["sites"] == ["site-1"]
        rollout = httpx.get(f"{console}v1/rollouts/{info['rollout']}", headers=auth, timeout=30).json()
        assert rollout["state"] == "running" and rollout["totals"].get("succeeded", 0) >= 1  # in progress
        pending = httpx.get(console + "v1/identities?status=pending", headers=auth, timeout=30).json()["identities"]
        assert [i["device_id"] for i in pending] == ["dev-9-001"]
        assert proc.poll() is None  # still running
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 128 + signal.SIGINT
        with pytest.raises(httpx.TransportError):
            httpx.get(console + "login", timeout=5)  # the cloud was stopped with it
    finally:
        if proc.poll() is None:  # SIGTERM first: the demo stops its fleet (a SIGKILL would leave the nodes)
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
