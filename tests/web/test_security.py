"""The review app's security: off loopback it refuses to start without a token, and then every page needs it;
every state-changing request needs a CSRF token (and a same-site origin); images come from storage by id only
(no traversal, no symlink out of the root); user-written ids and prompts stay text, in a real browser too."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from html.parser import HTMLParser

import httpx
import pytest
from sqlalchemy import select, update

from pipeline.db.models import Item, ItemOutput, ItemReview
from pipeline.errors import InputError
from pipeline.web.server import check_bind
from tests.review.helpers import cli, sessions_for
from tests.web.conftest import CHROMIUM_ARGS, SCRIPT_ID, XSS_ID, XSS_TITLE, Job, browser_client, csrf_of, serving

TOKEN = "s3cret-token-for-tests-0123456789"


class _Tags(HTMLParser):
    """Every start tag of a page with its attributes, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append((tag, {k: v or "" for k, v in attrs}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reviews(job: Job) -> dict[str, str]:
    with sessions_for(job.db_url) as sessions, sessions() as s:
        return dict(s.execute(select(Item.key, ItemReview.state).join(ItemReview, ItemReview.item_id == Item.id))
                    .tuples().all())


# -- authentication ------------------------------------------------------------------------------------------

def test_refuses_to_start_off_loopback_without_a_token(job: Job) -> None:
    settings = job.settings()
    with pytest.raises(InputError, match=r"refusing to listen on 0\.0\.0\.0 without a token"):
        check_bind("0.0.0.0", settings)
    assert check_bind("127.0.0.1", settings) is None and check_bind("::1", settings) is None
    assert check_bind("0.0.0.0", job.settings(PIPELINE_SERVE_TOKEN=TOKEN)) == TOKEN
    code, _, out = cli("serve", "--host", "0.0.0.0", "--port", str(_free_port()), "--config", job.cfg)
    assert code == 2 and "refusing to listen" in out
    short = job.tmp / "short.yaml"
    short.write_text(job.cfg.read_text() + "serve: {token: abc}\n")
    code, _, out = cli("serve", "--host", "0.0.0.0", "--config", short)
    assert code == 2 and "at least 16 characters" in out and "abc" not in out


def test_cli_serve_off_loopback_requires_the_token(job: Job) -> None:
    """The real command, bound to 0.0.0.0 with PIPELINE_SERVE_TOKEN: pages redirect to the login form, the JSON
    API answers 401, and the bearer token opens it."""
    port = _free_port()
    env = {**os.environ, "PIPELINE_SERVE_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--host", "0.0.0.0", "--port", str(port),
                             "--no-worker", "--config", str(job.cfg)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                first = httpx.get(url + "/", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        assert first.status_code == 303 and first.headers["location"] == "/login?next=%2F"
        assert httpx.get(url + "/api/jobs").status_code == 401
        assert httpx.get(url + "/media/items/1/image").status_code == 303
        ok = httpx.get(url + "/api/jobs", headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()["jobs"][0]["job"] == "web"
        wrong = {"authorization": "Bearer wrong-token-0123456789"}
        assert httpx.get(url + "/api/jobs", headers=wrong).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert TOKEN not in err  # the token is never printed


def test_pages_need_the_token_login_and_bearer(job: Job) -> None:
    with serving(job.settings(), TOKEN) as (url, _):
        c = httpx.Client(base_url=url)
        for path in ("/", "/jobs/1", "/providers", "/jobs/1/export.zip", "/media/items/1/thumb"):
            r = c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
        assert c.get("/api/jobs/1").status_code == 401
        login = c.get("/login")
        assert login.status_code == 200 and 'name="token"' in login.text
        csrf = csrf_of(login.text)
        # a review POST without authentication is refused and changes nothing
        r = c.post("/jobs/1/review", data={"items": "a1", "action": "reject", "csrf": csrf})
        assert r.status_code == 401 and _reviews(job) == {}
        r = c.post("/login", data={"token": "not-the-token-at-all", "csrf": csrf, "next": "/jobs/1"})
        assert r.status_code == 401 and "wrong token" in r.text
        assert "pipeline_auth" not in r.headers.get("set-cookie", "")
        r = c.post("/login", data={"token": TOKEN, "next": "/jobs/1"})  # login needs the CSRF token too
        assert r.status_code == 403
        r = c.post("/login", data={"token": TOKEN, "csrf": csrf, "next": "https://evil.example/"})
        assert r.status_code == 303 and r.headers["location"] == "/"  # no open redirect
        cookie = r.headers["set-cookie"]
        assert "pipeline_auth=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert TOKEN not in cookie  # an HMAC of it, never the token
        page = c.get("/jobs/1")
        assert page.status_code == 200 and "a1" in page.text
        r = c.post("/jobs/1/review", data={"items": "a1", "action": "reject", "csrf": csrf_of(page.text)})
        assert r.status_code == 303 and _reviews(job) == {"a1": "rejected"}
        assert c.post("/logout", data={"csrf": csrf}).status_code == 303
        assert c.get("/jobs/1").status_code == 303
        # JSON clients: the bearer header (which no browser adds by itself) needs no CSRF token
        bearer = {"authorization": f"Bearer {TOKEN}", "accept": "application/json"}
        r = httpx.post(f"{url}/jobs/1/review", data={"items": "a2", "action": "approve"}, headers=bearer)
        assert r.status_code == 200 and r.json()["ok"] is True and _reviews(job)["a2"] == "approved"


# -- CSRF -----------------------------------------------------------------------------------------------------

def test_every_post_needs_a_csrf_token(job: Job) -> None:
    posts = {"/jobs/1/review": {"items": "a1", "action": "reject"},
             "/jobs/1/prompt": {"item": "a1", "prompt": "changed by an attacker"},
             "/jobs/1/regenerate": {}, "/logout": {}, "/login": {"token": "x"}}
    with serving(job.settings()) as (url, _):
        c, csrf = browser_client(url)
        _other, other_csrf = browser_client(url)  # another visitor: a valid token, but for another cookie
        for path, data in posts.items():
            for headers, body in [({}, data), ({}, {**data, "csrf": "0" * 64}), ({}, {**data, "csrf": other_csrf}),
                                  ({"x-csrf-token": "nope"}, data),
                                  ({"origin": "https://evil.example"}, {**data, "csrf": csrf}),
                                  ({"sec-fetch-site": "cross-site"}, {**data, "csrf": csrf})]:
                r = c.post(path, data=body, headers={"accept": "application/json", **headers})
                assert r.status_code == 403, (path, headers, r.status_code)
        # a request without the visitor's cookie cannot use a token either
        bare = httpx.post(f"{url}/jobs/1/review", data={"items": "a1", "action": "reject", "csrf": csrf})
        assert bare.status_code == 403
        assert _reviews(job) == {}
        with sessions_for(job.db_url) as sessions, sessions() as s:
            assert s.scalar(select(Item.state).where(Item.key == "a1")) == "succeeded"
        # GET never changes anything
        assert c.get("/jobs/1/review").status_code == 405 and c.get("/jobs/1/regenerate").status_code == 405
        ok = c.post("/jobs/1/review", data={"items": "a1", "action": "reject"},
                    headers={"accept": "application/json", "x-csrf-token": csrf, "origin": url})
        assert ok.status_code == 200 and _reviews(job) == {"a1": "rejected"}


def test_loopback_app_answers_loopback_host_names_only(job: Job) -> None:
    """Without a token, a page on another site that rebinds its name to 127.0.0.1 gets nothing."""
    with serving(job.settings()) as (url, _):
        assert httpx.get(url + "/", headers={"host": "evil.example"}).status_code == 400
        assert httpx.get(url + "/api/jobs", headers={"host": "localhost"}).status_code == 200


# -- images: storage only, no traversal --------------------------------------------------------------------

def test_media_is_served_from_storage_by_id_without_traversal(job: Job) -> None:
    secret = job.tmp / "secret.txt"
    secret.write_text("TOP-SECRET-CONFIG")
    out = job.tmp / "out"
    with sessions_for(job.db_url) as sessions:
        with sessions() as s:
            a1 = s.scalars(select(Item).where(Item.key == "a1")).one()
            a2 = s.scalars(select(Item).where(Item.key == "a2")).one()
        with serving(job.settings()) as (url, _):
            # a link out of the root made after start (at start, `serve` refuses a root holding one)
            (out / "escape.png").symlink_to(secret)
            c = httpx.Client(base_url=url)
            good = c.get(f"/media/items/{a1.id}/image")
            assert good.status_code == 200 and good.headers["content-type"] == "image/png"
            assert good.content == (out / a1.output_key).read_bytes()
            assert "sandbox" in good.headers["content-security-policy"]
            for path in ("/media/items/..%2F..%2Fsecret.txt/image", "/media/items/1/..%2F..%2Fsecret.txt",
                         "/media/items/../../secret.txt", "/static/..%2F..%2F..%2Fpipeline.yaml",
                         "/static/../../pipeline.yaml", "/media/items/999999/image", "/media/history/1/image"):
                r = c.get(path)
                assert r.status_code == 404 and b"TOP-SECRET" not in r.content, path
            # keys in rows are checked again when served: a traversal key, an absolute one, a symlink out of the root
            for bad_key in ("../secret.txt", "/etc/passwd", "escape.png", "a/../../secret.txt"):
                with sessions.begin() as s:
                    s.execute(update(Item).where(Item.id == a2.id).values(output_key=bad_key, thumb_key=bad_key))
                for kind in ("image", "thumb"):
                    r = c.get(f"/media/items/{a2.id}/{kind}")
                    assert r.status_code == 404 and b"TOP-SECRET" not in r.content, bad_key
            with sessions.begin() as s:
                s.add(ItemOutput(item_id=a2.id, job_id=a2.job_id, seq=1, object_key="../secret.txt",
                                 thumb_key="escape.png", prompt="p", cache_key="0" * 64, state="succeeded",
                                 review_state="rejected", archived_at=a2.updated_at))
                hid = s.scalar(select(ItemOutput.id))
            for kind in ("image", "thumb"):
                r = c.get(f"/media/history/{hid}/{kind}")
                assert r.status_code == 404 and b"TOP-SECRET" not in r.content


# -- XSS --------------------------------------------------------------------------------------------------------

def test_item_ids_and_prompts_stay_text(job: Job) -> None:
    evil_prompt = "</textarea><script>alert(4)</script><img src=x onerror=alert(5)>"
    code, _, out = cli("review", job.name, "--prompt", XSS_ID, evil_prompt, "--config", job.cfg)
    assert code == 0, out
    code, _, out = cli("review", job.name, "--reject", SCRIPT_ID, "--note", "<b onmouseover=alert(6)>x</b>",
                       "--config", job.cfg)
    assert code == 0, out
    with serving(job.settings()) as (url, _):
        c = httpx.Client(base_url=url)
        for path in ("/jobs/1", "/jobs/web", "/jobs/1?fragment=gallery", "/", "/jobs/1?tag=sale"):
            tags = _Tags()
            tags.feed(c.get(path).text)
            # the only script is the app's own file; no element carries an event handler; nothing injected
            assert [a for t, a in tags.seen if t == "script"] in ([{"src": "/static/app.js"}], []), path
            assert not [(t, a) for t, a in tags.seen if any(k.startswith("on") for k in a)], path
            assert not [a for t, a in tags.seen if t == "img" and a.get("src") == "x"], path
        html = c.get("/jobs/1").text
        assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;script&gt;" in html
        assert "&lt;/textarea&gt;&lt;script&gt;alert(4)&lt;/script&gt;" in html
        assert "note: &lt;b onmouseover=alert(6)&gt;x&lt;/b&gt;" in html
        assert "mug &lt;/textarea&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in html  # the rendered prompt
        api = c.get("/api/jobs/1")
        assert api.headers["content-type"] == "application/json"


@pytest.mark.timeout(900)  # the chromium fixture may install the package first
def test_xss_does_not_run_in_a_real_browser(job: Job, chromium: str) -> None:
    """The same page in Chromium: no dialog opens, and the ids read back as the exact text they are."""
    from playwright.sync_api import sync_playwright

    cli("review", job.name, "--prompt", XSS_ID, "</textarea><script>alert(4)</script>", "--config", job.cfg)
    with serving(job.settings()) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{url}/jobs/1")
            keys = page.locator('[data-testid="item-key"]').all_inner_texts()
            assert XSS_ID in keys and SCRIPT_ID in keys
            prompts = page.locator('[data-testid="prompt"]').all_inner_texts()
            assert f"Product photo of {XSS_TITLE}" in prompts
            card = page.locator("article.card", has_text=XSS_ID)
            card.locator("details.edit summary").click()
            assert card.locator("textarea").input_value() == "</textarea><script>alert(4)</script>"
            page.keyboard.press("j")
            page.wait_for_timeout(500)
            assert dialogs == []
            assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
        finally:
            browser.close()

