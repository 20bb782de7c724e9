"""The page's own HTTP, spoken by a test the way a browser (or an attacker in a second
signed-in session) speaks it: sign-in cookie, uploads, and handlers called by number
through Gradio's queue, hidden ones included (`api_name=False` hides a handler from the API
docs, not from `/gradio_api/queue/join`)."""
from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from tests.conftest import SAFETY_S


class PageSession:
    """One person's session with the running app; signed in when `user` is given."""

    def __init__(self, url: str, user: tuple[str, str] | None = None,
                 timeout: float = SAFETY_S) -> None:
        # The page's own requests are same-origin; say so as a browser does.
        self.http = httpx.Client(base_url=url, timeout=timeout,
                                 headers={"Sec-Fetch-Site": "same-origin"})
        if user is not None:
            answer = self.http.post("login", data={"username": user[0], "password": user[1]})
            assert answer.status_code == 200, answer.text
        self.config = self.http.get("config").json()

    # -- which handler -------------------------------------------------------------------
    def handler(self, elem_id: str = "", event: str | None = None,
                writes: str | None = None) -> int:
        """The fn_index of the root page's first handler that `event` (any when None) on
        the component `elem_id` (any when "") runs and, when `writes` is given, whose
        first output is the component with that elem_id."""
        sources, sinks = self._ids(elem_id), self._ids(writes) if writes else set()
        return min(d["id"] for d in self.config["dependencies"]
                   if any((not elem_id or t[0] in sources) and event in (None, t[1])
                          for t in d["targets"])
                   and (not sinks or set(d["outputs"][:1]) & sinks))

    def named(self, api_name: str) -> int:
        """The fn_index of the root page's handler with this API name."""
        return min(d["id"] for d in self.config["dependencies"] if d.get("api_name") == api_name)

    def _ids(self, elem_id: str) -> set[int]:
        return {c["id"] for c in self.config["components"]
                if c.get("props", {}).get("elem_id") == elem_id}

    # -- calls -----------------------------------------------------------------------------
    def outcome(self, fn_index: int, *data: Any, page: str | None = None) -> dict:
        """Gradio's `process_completed` message for one call. One `page` (a session hash)
        is one open page: the server keeps its State values and a dropdown's choices
        between calls."""
        page = page or self.new_page()
        joined = self.http.post("gradio_api/queue/join", json={
            "data": list(data), "fn_index": fn_index, "session_hash": page,
            "event_data": None, "trigger_id": None})
        assert joined.status_code == 200, joined.text
        with self.http.stream("GET", "gradio_api/queue/data",
                              params={"session_hash": page}) as events:
            for line in events.iter_lines():
                if line.startswith("data:") and '"process_completed"' in line:
                    return json.loads(line[5:])
        raise AssertionError("the queue closed before the handler completed")

    def call(self, fn_index: int, *data: Any, page: str | None = None) -> list:
        """The handler's outputs; the test fails if the handler raised."""
        done = self.outcome(fn_index, *data, page=page)
        assert done.get("success"), done
        return done["output"]["data"]

    @staticmethod
    def new_page() -> str:
        return uuid.uuid4().hex[:11]

    def open_page(self) -> str:
        """A page as the browser opens it: its load filled the sidebar's choices."""
        page = self.new_page()
        self.call(self.handler("", "load", writes="conversations"), page=page)
        return page

    def upload(self, name: str, data: bytes) -> str:
        """The server path of an uploaded file, as the page's upload returns it."""
        answer = self.http.post("gradio_api/upload", files={"files": (name, data)})
        assert answer.status_code == 200, answer.text
        return answer.json()[0]


def file_data(path: str, name: str) -> dict:
    """An uploaded file as an upload component hands it to its handler."""
    return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}
