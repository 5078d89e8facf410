"""gateway.rollout_relay.RolloutRelay on its own: plans to the site's runner, update outcomes from the checked
records, the runner's reports to the cloud; nothing at all when site rollouts are off."""

from common.effects import Append
from common.protocol import SitePlanEnvelope, decode_record
from gateway.rollout_effects import DeviceOutcome, SitePlanArrived, SiteReport
from gateway.rollout_relay import RolloutRelay

RECORDS = [[1, 10, "metrics", {"v": 1.0}], [2, 11, "update", {"outcome": "committed", "version": "2.0"}]]


def test_plans_and_outcomes_pass_only_when_on():
    on, off = RolloutRelay(True), RolloutRelay(False)
    plan = SitePlanEnvelope("r-1", b"signed")
    assert on.plan(plan) == [SitePlanArrived("r-1", b"signed")] and off.plan(plan) == []
    assert on.outcomes("dev-1", "critical", RECORDS) == [DeviceOutcome("dev-1", {"outcome": "committed", "version": "2.0"})]
    assert on.outcomes("dev-1", "bulk", RECORDS) == [] and off.outcomes("dev-1", "critical", RECORDS) == []


def test_a_site_report_goes_to_the_cloud_as_a_rollout_report():
    (append,) = RolloutRelay(True).report(SiteReport("dev-1", {"rollout": "r-1", "state": "installing"}), 2.0)
    assert isinstance(append, Append) and append.token == ("report", "rollout")
    rec = decode_record(append.payloads[0])
    assert (rec.device_id, rec.stream, rec.seq, rec.ts_ms, rec.kind) == ("dev-1", "critical", 0, 2000, "rollout")
