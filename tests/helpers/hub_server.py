"""A stand-in for the Hugging Face Hub on 127.0.0.1: the endpoints huggingface_hub calls to check a
token, create a repo and a branch, and commit files (regular, non-LFS uploads). It keeps what arrived
so tests can assert on it. Point a client at it with HF_ENDPOINT=server.url."""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self, token: str, user: str = "alice"):
        self.token, self.user = token, user
        self.repos: dict[str, dict] = {}  # repo_id -> {"private": bool, "branches": {name: {path: bytes}}}
        self.requests: list[tuple[str, str, str]] = []  # (method, path, authorization header)
        self.commit_messages: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                hub._handle(self, "GET")

            def do_POST(self):
                hub._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id]["branches"][branch]

    # ------------------------------------------------------------ request handling

    def _reply(self, handler, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _handle(self, handler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = handler.path.split("?")[0]
        authorization = handler.headers.get("Authorization", "")
        self.requests.append((method, path, authorization))
        if path == "/api/agent-harnesses":  # public registry huggingface_hub fetches once a day
            return self._reply(handler, 200, {})
        if authorization != f"Bearer {self.token}":
            return self._reply(handler, 401, {"error": "Invalid credentials in Authorization header"})
        if method == "GET" and path == "/api/whoami-v2":
            return self._reply(
                handler, 200, {"type": "user", "name": self.user, "auth": {"accessToken": {"role": "write"}}}
            )
        if method == "POST" and path == "/api/validate-yaml":  # model card metadata
            return self._reply(handler, 200, {"errors": [], "warnings": []})
        if method == "POST" and path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
            if payload.get("organization") not in (None, self.user):
                return self._reply(
                    handler, 403, {"error": "You don't have the rights to create a model under this namespace"}
                )
            if repo_id in self.repos:
                return self._reply(
                    handler, 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
                )
            self.repos[repo_id] = {
                "private": payload.get("visibility") == "private" or bool(payload.get("private")),
                "branches": {"main": {}},
            }
            return self._reply(handler, 200, {"url": f"{self.url}/{repo_id}", "name": repo_id})
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)", path)
        if match is None or match.group(1) not in self.repos:
            return self._reply(handler, 404, {"error": f"not found: {method} {path}"})
        repo_id, action, revision = match.group(1), match.group(2), match.group(3).replace("%2F", "/")
        branches = self.repos[repo_id]["branches"]
        if action == "branch":
            branches.setdefault(revision, dict(branches["main"]))
            return self._reply(handler, 200, {})
        if revision not in branches:
            return self._reply(handler, 404, {"error": f"revision {revision} not found"})
        if action == "preupload":
            files = json.loads(body)["files"]
            return self._reply(
                handler,
                200,
                {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
            )
        for line in body.decode().splitlines():  # commit: NDJSON, a header then one line per file
            entry = json.loads(line)
            if entry["key"] == "header":
                self.commit_messages.append(entry["value"]["summary"])
            elif entry["key"] == "file":
                branches[revision][entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
        return self._reply(
            handler,
            200,
            {"commitUrl": f"{self.url}/{repo_id}/commit/{'0' * 40}", "commitOid": "0" * 40, "success": True},
        )
