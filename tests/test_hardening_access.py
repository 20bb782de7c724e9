"""What a second signed-in user or another website could reach, tried the way the attacks
went (issue 27): exports read across users (1), another user's text learnt from the shared
prompt cache (2), framing and cross-site GETs (7), data kept after deletion (8) and
passwords visible in `ps` (10).

The server tests run one real app with `--auth-file` (alice, the admin, and bob) and
SmolLM2; bob is driven as an attacker would drive him: raw HTTP with his own session,
handlers called by number through `/gradio_api/queue/join`, the API with HTTP Basic.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from chatcore.api.credentials import AUTH_ENV, CredentialsError, read_auth_file, resolve
from chatui.exports import ExportFiles, conversation_key
from tests.conftest import CAPITAL_PROMPT, SHIPPED_MODELS, SAFETY_S, RunningApp, start_app
from tests.page_session import PageSession, file_data
from tests.test_app_client import send_args
from tests.test_request_guard import another_site

MODEL = "smollm2-135m"
ALICE, BOB = ("alice", "wonder:land,1"), ("bob", "b0b-the-builder")
# About 300 tokens of alice's own words: long enough that reading it again is seen.
MEMO = ("Memo to the board, strictly confidential. The Manila office will close on the last "
        "Friday of March and its nine engineers will move to the Cebu team, which Teresa "
        "Villanueva will lead from April. The budget for the new office is four point two "
        "million pesos, of which one point one million is for the lease and the rest for "
        "equipment, moving costs and a signing bonus for each engineer who stays. Nobody "
        "outside this list may hear of it before the announcement on the fifteenth. ") * 3


# -- the running app -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_users(tmp_path_factory) -> Iterator[RunningApp]:
    folder = tmp_path_factory.mktemp("two-users")
    users = folder / "users"
    users.write_text(f"# who may sign in\n{ALICE[0]}:{ALICE[1]}\n\n{BOB[0]}:{BOB[1]}\n")
    users.chmod(0o600)
    app = start_app(["--models", str(SHIPPED_MODELS), "--data-dir", str(folder / "data"),
                     "--auth-file", str(users), "--admins", "alice"])
    yield app
    if app.process.poll() is not None:
        print("".join(app.output)[-5000:])
    app.stop()


def chat_reply(app: RunningApp, user: tuple[str, str], messages: list[dict],
               max_tokens: int) -> dict:
    answer = httpx.post(f"{app.url}v1/chat/completions", auth=user, timeout=120, json={
        "model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0})
    assert answer.status_code == 200, answer.text
    return answer.json()


# -- 1: exports ----------------------------------------------------------------------------
@pytest.mark.slow
def test_an_export_is_read_by_its_owner_only_and_goes_with_its_conversation(two_users):
    alice = Client(two_users.url, auth=ALICE, verbose=False)
    alice.predict(*send_args(CAPITAL_PROMPT, max_new_tokens=8), api_name="/send")
    [conversation] = alice.predict("", api_name="/conversations")
    alice_page, bob_page = PageSession(two_users.url, ALICE), PageSession(two_users.url, BOB)
    page = alice_page.open_page()
    alice_page.call(alice_page.named("open"), conversation["id"], page=page)
    download, _ = alice_page.call(alice_page.handler("export-md"), None, False, page=page)
    exported = Path(download["value"]["path"])
    # Where today's main wrote it, under a name anyone could work out: not served at all.
    data_dir = Path(two_users.process.args[two_users.process.args.index("--data-dir") + 1])
    guessed = data_dir / "exports" / f"{conversation['id']}-Name-the-capital-of-France.md"
    assert bob_page.http.get(f"gradio_api/file={guessed}").status_code in (403, 404)
    # The real name holds 128 random bits, in a folder of its own, told only to alice.
    assert exported.name == "Name-the-capital-of-France.md"
    assert len(exported.parent.name.removeprefix("export-")) == 32
    assert str(data_dir) not in str(exported)
    assert "Paris" in alice_page.http.get(f"gradio_api/file={exported}").text

    alice_page.call(alice_page.named("delete"), None, "", page=page)
    assert not exported.exists()
    assert alice_page.http.get(f"gradio_api/file={exported}").status_code in (403, 404)


def test_export_folders_are_new_each_time_and_expire(tmp_path):
    exports = ExportFiles(tmp_path, ttl_s=3600)
    first = exports.path("a.md", about=conversation_key("alice", 1))
    second = exports.path("a.md", about=conversation_key("alice", 2))
    first.write_text("one")
    second.write_text("two")
    assert first.parent != second.parent and first.name == second.name == "a.md"
    assert exports.discard(conversation_key("alice", 1)) == 1
    assert not first.exists() and second.exists()
    exports.ttl_s = 0
    exports.expire()
    assert not second.exists()
    third = exports.path("../../escape.md")  # a name cannot leave its folder
    assert third.parent.parent == tmp_path
    exports.close()
    assert not third.parent.exists()


# -- 2: saved prompt states ----------------------------------------------------------------
@pytest.mark.slow
def test_one_user_cannot_learn_anothers_text_from_the_prompt_cache(two_users):
    """Bob's guess of alice's memo is read in full (no cached tokens), exactly like
    unrelated text, while alice's own follow-up starts from her saved state. Counts, not
    times: `usage.prompt_tokens_details.cached_tokens` says how much of a prompt was not
    read again."""
    memo = [{"role": "user", "content": MEMO + "Summarise this memo in one line."}]
    first = chat_reply(two_users, ALICE, memo, max_tokens=8)
    assert first["usage"]["prompt_tokens"] > 250

    guess = [{"role": "user", "content": MEMO + "Who will lead the Cebu team?"}]
    unrelated = [{"role": "user", "content": MEMO.replace("Manila", "Davao").replace(
        "Memo", "Note") + "Who will lead the Cebu team?"}]
    bob_guess = chat_reply(two_users, BOB, guess, max_tokens=1)["usage"]
    bob_unrelated = chat_reply(two_users, BOB, unrelated, max_tokens=1)["usage"]
    assert bob_guess["prompt_tokens_details"]["cached_tokens"] == 0, bob_guess
    # Bob's unrelated text shares his own first request's opening (the template's system
    # prompt) and no more: his guess gained nothing from alice's memo.
    assert bob_unrelated["prompt_tokens_details"]["cached_tokens"] < 40, bob_unrelated

    follow_up = memo + [{"role": "assistant", "content": first["choices"][0]["message"]
                         ["content"]}, {"role": "user", "content": "Thank you."}]
    alice_again = chat_reply(two_users, ALICE, follow_up, max_tokens=1)["usage"]
    assert alice_again["prompt_tokens_details"]["cached_tokens"] > 250, alice_again


# -- 7: framing, cookies, cross-site GETs, loopback origins --------------------------------
@pytest.mark.slow
def test_no_framing_lax_cookies_and_no_sign_out_from_another_site(two_users):
    port = httpx.URL(two_users.url).port
    page = httpx.get(two_users.url, timeout=SAFETY_S)
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

    alice = httpx.Client(base_url=two_users.url, timeout=SAFETY_S)
    login = alice.post("login", data={"username": ALICE[0], "password": ALICE[1]})
    cookies = login.headers.get_list("set-cookie")
    assert cookies and all("SameSite=Lax" in c and "samesite=none" not in c.lower()
                           for c in cookies), cookies

    # An <img src=".../logout"> on another site (another port of this machine is the same
    # "site" to a browser): refused, and alice stays signed in.
    for site in ("cross-site", "same-site"):
        refused = alice.get("logout", headers={
            "Sec-Fetch-Site": site, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"})
        assert refused.status_code == 403, refused.text
    framed = alice.get("", headers={"Sec-Fetch-Site": "cross-site",
                                    "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe"})
    assert framed.status_code == 403
    assert alice.get("config").status_code == 200  # still signed in
    # A link from elsewhere to the page still opens it; only the page itself signs out.
    followed = alice.get("", headers={"Sec-Fetch-Site": "cross-site",
                                      "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"})
    assert followed.status_code == 200
    alice.get("logout", headers={"Sec-Fetch-Site": "same-origin"})
    assert alice.get("config").status_code == 401

    # Loopback origins match exactly: another loopback address is another site.
    for origin in (f"http://127.0.0.2:{port}", f"http://localhost:{port}"):
        posted = httpx.post(f"{two_users.url}gradio_api/queue/join", timeout=SAFETY_S,
                            headers={"Origin": origin}, json={})
        assert posted.status_code == 403, (origin, posted.text)


@pytest.mark.slow
def test_in_chromium_another_page_can_neither_frame_the_app_nor_sign_its_user_out(
        two_users, chromium_path):
    html = (f'<iframe id="app" src="{two_users.url}" width="800" height="600"></iframe>'
            f'<img src="{two_users.url}logout">')
    with another_site(html, chromium_path) as (browser, page_url):
        context = browser.new_context()
        signed = context.request.post(f"{two_users.url}login", form={
            "username": ALICE[0], "password": ALICE[1]})
        assert signed.ok
        page = context.new_page()
        page.goto(page_url, wait_until="load")
        framed = [f for f in page.frames if f != page.main_frame]
        shown = [f.evaluate("document.title") for f in framed if f.url.startswith("http")]
        still_signed_in = context.request.get(f"{two_users.url}config").status
    assert framed, "the attack page has its frame"
    assert not any(shown), f"the app showed in another site's frame: {shown}"
    assert still_signed_in == 200


# -- 8: nothing kept after deletion --------------------------------------------------------
@pytest.mark.slow
def test_run_history_is_off_and_uploads_are_deleted_once_read(two_users):
    bob = PageSession(two_users.url, BOB)
    assert bob.config["run_history"] is False
    assert bob.http.get("gradio_api/runs").status_code == 404

    path = bob.upload("notes.txt", b"Bartholomew Quince keeps the lighthouse.\n")
    assert Path(path).exists()
    _, chips = bob.call(bob.handler("attach", "upload"), [file_data(path, "notes.txt")], None,
                         MODEL)
    assert "notes.txt" in chips  # the text is kept as an attachment...
    assert not Path(path).exists()  # ...and the uploaded original is gone


# -- 10: passwords out of the command line -------------------------------------------------
@pytest.mark.slow
def test_auth_file_keeps_passwords_out_of_the_process_arguments(two_users):
    arguments = Path(f"/proc/{two_users.process.pid}/cmdline").read_bytes().decode()
    assert "--auth-file" in arguments
    assert ALICE[1] not in arguments and BOB[1] not in arguments
    # A password with ':' and ',' works from the file, and a wrong one does not.
    assert httpx.get(f"{two_users.url}v1/models", auth=ALICE, timeout=SAFETY_S).status_code == 200
    assert httpx.get(f"{two_users.url}v1/models", auth=(ALICE[0], "wonder"),
                     timeout=SAFETY_S).status_code == 401


def test_credentials_come_from_a_file_or_the_environment_and_auth_is_warned_about(tmp_path):
    users = tmp_path / "users"
    users.write_text("alice:a:b,c\n# bob is away\n")
    users.chmod(0o644)
    from_file = read_auth_file(users)
    assert from_file.users == [("alice", "a:b,c")]
    assert any("chmod 600" in w for w in from_file.warnings)
    users.chmod(0o600)
    assert read_auth_file(users).warnings == []

    assert resolve(None, None, {AUTH_ENV: "alice:x,bob:y"}).users == [("alice", "x"),
                                                                     ("bob", "y")]
    assert resolve(None, None, {}).users is None
    flagged = resolve("alice:x", None, {})
    assert flagged.users == [("alice", "x")] and "--auth-file" in flagged.warnings[0]
    with pytest.raises(CredentialsError, match="give one"):
        resolve("alice:x", users, {})


@pytest.mark.parametrize("text, where", [
    ("alice:x\nbob\n", "line 2"), ("alice:x\n:y\n", "line 2"), ("# nobody\n", "no USER"),
    ("alice:x\nalice:y\n", "named twice"), ("alice:\n", "line 1")])
def test_a_bad_auth_file_names_the_line_and_never_echoes_a_password(tmp_path, text, where):
    users = tmp_path / "users"
    users.write_text(text)
    with pytest.raises(CredentialsError, match=where) as refused:
        read_auth_file(users)
    assert str(users) in str(refused.value)
    assert ":x" not in str(refused.value) and ":y" not in str(refused.value)


def test_the_app_refuses_a_missing_auth_file_with_its_path(tmp_path, capsys):
    import chat_app

    missing = tmp_path / "nope"
    code = chat_app.main(["--models", str(SHIPPED_MODELS), "--data-dir", str(tmp_path),
                          "--auth-file", str(missing), "--no-browser"])
    assert code == chat_app.EXIT_USAGE
    assert f"--auth-file {missing}" in capsys.readouterr().err
    assert os.environ.get(AUTH_ENV) is None
