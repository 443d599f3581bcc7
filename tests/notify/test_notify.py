"""Job notifications: one Slack-compatible message per event of a run (finished, failed, budget), with the job's
numbers and a link to its page; a rerun is a new run; a manifest can override the config; a manifest's webhook
may not point at a private address; a webhook that is down is tried again, one whose answer was lost is not."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import select

from pipeline.config import load_settings
from pipeline.db.models import Notification
from pipeline.notify.deliver import deliver_due
from pipeline.runtime import open_runtime
from pipeline.sandbox.server import SandboxServer
from tests.notify.conftest import Receiver
from tests.review.helpers import cli, sessions_for, write_config, write_manifest

ITEMS = [{"id": "a", "title": "a red kettle"}, {"id": "b", "title": "a blue mug"}]


def _rows(db_url: str) -> list[tuple[str, str, int, str]]:
    with sessions_for(db_url) as sessions, sessions() as s:
        return [(str(j), e, r, st) for j, e, r, st in s.execute(
            select(Notification.job_id, Notification.event, Notification.run, Notification.state)
            .order_by(Notification.id))]


def test_finished_failed_and_rerun_each_notify_once(tmp_path: Path, sandbox: SandboxServer,
                                                     receiver: Receiver) -> None:
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg = write_config(tmp_path, db_url, sandbox.url, notify={"webhook_url": receiver.url},
                       serve={"public_url": "https://review.example.com/"})
    assert cli("run", write_manifest(tmp_path, "good", ITEMS), "--config", cfg)[0] == 0
    assert receiver.events() == [("good", "finished")]  # sent before `run` returned
    body = receiver.bodies[0]
    payload = body["metadata"]["event_payload"]
    assert body["metadata"]["event_type"] == "pipeline_job_finished"
    assert payload["job_id"] == 1 and payload["state"] == "succeeded" and payload["counts"]["succeeded"] == 2
    assert payload["url"] == "https://review.example.com/jobs/1"
    assert payload["cost_usd"] == json.loads(cli("status", "good", "--json", "--config", cfg)[1])["cost_usd"]
    assert payload["saved_usd"] == "0.00" and payload["review"] == {"approved": 0, "rejected": 0, "unreviewed": 2}
    assert body["text"].startswith(":white_check_mark: Job *good* finished: succeeded 2 · cost $")
    assert "<https://review.example.com/jobs/1|open the job>" in body["text"]
    assert body["blocks"][0]["type"] == "section" and body["blocks"][1]["fields"][0]["text"] == "*State*\nsucceeded"

    # running the manifest again is a new run of the job, with its own event
    assert cli("run", write_manifest(tmp_path, "good", ITEMS), "--config", cfg)[0] == 0
    bad = [*ITEMS, {"id": "x", "title": "nope [sandbox:block-prompt]"}]
    assert cli("run", write_manifest(tmp_path, "bad", bad), "--config", cfg)[0] == 1
    assert receiver.events() == [("good", "finished"), ("good", "finished"), ("bad", "failed")]
    assert receiver.bodies[2]["text"].startswith(":warning: Job *bad* finished with failures")
    assert _rows(db_url) == [("1", "finished", 1, "sent"), ("1", "finished", 2, "sent"), ("2", "failed", 1, "sent")]


def test_budget_notifies_once_and_manifest_settings_override(tmp_path: Path, sandbox: SandboxServer,
                                                             receiver: Receiver) -> None:
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg = write_config(tmp_path, db_url, sandbox.url, notify={"webhook_url": receiver.url, "on": ["budget"]},
                       allow_private_references=True)
    items = [{"id": f"i{n}", "title": f"thing {n}"} for n in range(8)]
    code, _, out = cli("run", write_manifest(tmp_path, "capped", items, budget={"max_usd": "0.30"}), "--config", cfg)
    assert code == 1 and "blocked" in out, out
    assert receiver.events() == [("capped", "budget")]  # several items blocked, one message; "failed" not wanted
    # sent as soon as the first item was blocked (the counts are the job's at that moment)
    assert receiver.bodies[0]["metadata"]["event_payload"]["counts"]["blocked"] >= 1
    assert receiver.bodies[0]["text"].startswith(":money_with_wings: Job *capped* hit its budget")
    final = json.loads(cli("status", "capped", "--json", "--config", cfg)[1])["counts"]
    assert final["blocked"] >= 5 and final["blocked"] + final["succeeded"] == 8
    assert [r[1:] for r in _rows(db_url)] == [("budget", 1, "sent"), ("failed", 1, "skipped")]
    # a manifest's own notify block wins over the config's (a webhook in a manifest may be a private address only
    # with allow_private_references, set above)
    own = {"webhook_url": receiver.url.replace("/hook", "/team"), "on": ["finished"]}
    assert cli("run", write_manifest(tmp_path, "own", ITEMS, notify=own), "--config", cfg)[0] == 0
    assert receiver.events()[-1] == ("own", "finished") and receiver.paths[-1] == "/team"


def test_a_manifest_webhook_to_a_private_address_is_refused(tmp_path: Path, sandbox: SandboxServer,
                                                            receiver: Receiver) -> None:
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg = write_config(tmp_path, db_url, sandbox.url)
    manifest = write_manifest(tmp_path, "m", ITEMS, notify={"webhook_url": receiver.url})
    assert cli("run", manifest, "--config", cfg)[0] == 0
    assert receiver.bodies == []
    with sessions_for(db_url) as sessions, sessions() as s:
        n = s.scalars(select(Notification)).one()
    assert n.state == "failed" and "webhook address refused" in (n.error or "") and "loopback" in (n.error or "")
    code, _, out = cli("validate", write_manifest(tmp_path, "m2", ITEMS, notify={"webhook_url": "ftp://x"}),
                       "--config", cfg)
    assert code == 2 and "webhook_url" in out
    code, _, out = cli("validate", write_manifest(tmp_path, "m3", ITEMS, notify={"on": ["done"]}), "--config", cfg)
    assert code == 2 and "notify.on" in out


def test_webhook_down_is_retried_and_a_lost_answer_is_not(tmp_path: Path, sandbox: SandboxServer,
                                                          receiver: Receiver) -> None:
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg = write_config(tmp_path, db_url, sandbox.url, notify={"webhook_url": receiver.url})
    receiver.script = [503]
    assert cli("run", write_manifest(tmp_path, "j", ITEMS), "--config", cfg)[0] == 0
    assert len(receiver.bodies) == 1 and _rows(db_url)[0][3] == "pending"  # answered 503: tried again in 30 s
    rt = open_runtime(load_settings(cfg, env={}))
    try:
        later = rt.ctx.clock() + timedelta(seconds=31)
        got = deliver_due(rt.sessions, rt.http, rt.settings, later)
        assert [d.state for d in got] == ["sent"] and len(receiver.bodies) == 2
        assert deliver_due(rt.sessions, rt.http, rt.settings, later) == []  # sent once, never again

        class Lost(httpx.BaseTransport):
            """The request went out, the answer never came."""

            def handle_request(self, request: httpx.Request) -> httpx.Response:
                raise httpx.ReadTimeout("no answer", request=request)

        with rt.sessions.begin() as s:
            s.add(Notification(job_id=1, event="finished", run=2, state="pending", attempts=0,
                               next_attempt_at=later, created_at=later, updated_at=later))
        got = deliver_due(rt.sessions, httpx.Client(transport=Lost()), rt.settings, later)
        assert [d.state for d in got] == ["failed"]
        assert deliver_due(rt.sessions, rt.http, rt.settings, later) == []  # not sent again: it may have arrived
        assert len(receiver.bodies) == 2
    finally:
        rt.close()
