"""A loopback stand-in for the Kubeflow Pipelines API server: the v2beta1 REST paths kfp.Client uses.

Only what cannot exist here is faked (no cluster); it speaks the real wire protocol: kfp-server-api's
JSON field names (snake_case, as the KFP gateway emits them), multipart pipeline uploads, JSON filters.
Every request is recorded so tests assert what the client really sent.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PREFIX = "/apis/v2beta1"
NOW = "2026-11-23T01:00:00Z"


@dataclass
class Request:
    method: str
    path: str
    query: dict
    body: bytes
    json: dict | None = None
    files: dict = field(default_factory=dict)


class FakeKFP:
    """State (pipelines, versions, experiments, runs, recurring runs) plus the request log."""

    def __init__(self):
        self.requests: list[Request] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}
        self.uploads: list[bytes] = []
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def calls(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == PREFIX + path]

    # --- handlers: (status, json) ---
    def handle(self, req: Request) -> tuple[int, dict]:
        path = req.path[len(PREFIX) :] if req.path.startswith(PREFIX) else None
        if path is None:
            return 404, {"error": "not found", "code": 5}
        if req.method == "GET" and path == "/healthz":
            return 200, {"multi_user": False}
        if req.method == "GET" and path == "/pipelines":
            return 200, self._list(self.pipelines, "pipelines", req)
        if req.method == "POST" and path == "/pipelines/upload":
            return self._upload_pipeline(req)
        if req.method == "POST" and path == "/pipelines/upload_version":
            return self._upload_version(req)
        if req.method == "GET" and path.startswith("/pipelines/") and path.endswith("/versions"):
            pid = path.split("/")[2]
            return 200, self._list(
                {k: v for k, v in self.versions.items() if v["pipeline_id"] == pid}, "pipeline_versions", req
            )
        if req.method == "GET" and path == "/experiments":
            return 200, self._list(self.experiments, "experiments", req)
        if req.method == "POST" and path == "/experiments":
            exp = {
                "experiment_id": str(uuid.uuid4()),
                "display_name": req.json["display_name"],
                "description": req.json.get("description") or "",
                "created_at": NOW,
                "namespace": req.json.get("namespace") or "",
                "storage_state": "AVAILABLE",
            }
            self.experiments[exp["experiment_id"]] = exp
            return 200, exp
        if req.method == "POST" and path == "/runs":
            run = {
                **req.json,
                "run_id": str(uuid.uuid4()),
                "state": "PENDING",
                "created_at": NOW,
                "storage_state": "AVAILABLE",
            }
            self.runs[run["run_id"]] = run
            return 200, run
        if req.method == "GET" and path == "/recurringruns":
            exp_id = (req.query.get("experiment_id") or [""])[0]
            return 200, self._list(
                {k: v for k, v in self.recurring.items() if not exp_id or v.get("experiment_id") == exp_id},
                "recurringRuns",
                req,
            )
        if req.method == "DELETE" and path.startswith("/recurringruns/"):
            if self.recurring.pop(path.split("/")[2], None) is None:
                return 404, {"error": "recurring run not found", "code": 5}
            return 200, {}
        if req.method == "POST" and path == "/recurringruns":
            job = {
                **req.json,
                "recurring_run_id": str(uuid.uuid4()),
                "status": "ENABLED",
                "created_at": NOW,
                "updated_at": NOW,
            }
            self.recurring[job["recurring_run_id"]] = job
            return 200, job
        return 404, {"error": f"no handler for {req.method} {req.path}", "code": 5}

    def _list(self, items: dict, key: str, req: Request) -> dict:
        values = list(items.values())
        raw = (req.query.get("filter") or [""])[0]
        if raw:
            for pred in json.loads(raw).get("predicates", []):
                want = pred.get("string_value", pred.get("stringValue"))
                values = [v for v in values if v.get(pred["key"]) == want]
        return {key: values, "total_size": len(values), "next_page_token": ""} if values else {}

    def _file(self, req: Request) -> bytes:
        data = req.files.get("uploadfile")
        if data is None:
            raise ValueError("upload without an 'uploadfile' part")
        self.uploads.append(data)
        return data

    def _upload_pipeline(self, req: Request) -> tuple[int, dict]:
        self._file(req)
        name = req.query["name"][0]
        if any(p["display_name"] == name for p in self.pipelines.values()):
            return 409, {"error": f"pipeline {name} exists", "code": 6}
        pipe = {
            "pipeline_id": str(uuid.uuid4()),
            "display_name": name,
            "name": name,
            "description": (req.query.get("description") or [""])[0],
            "created_at": NOW,
            "namespace": "",
        }
        self.pipelines[pipe["pipeline_id"]] = pipe
        version = {
            "pipeline_id": pipe["pipeline_id"],
            "pipeline_version_id": str(uuid.uuid4()),
            "display_name": name,
            "name": name,
            "created_at": NOW,
        }
        self.versions[version["pipeline_version_id"]] = version
        return 200, pipe

    def _upload_version(self, req: Request) -> tuple[int, dict]:
        self._file(req)
        pid = (req.query.get("pipelineid") or [""])[0]
        if pid not in self.pipelines:
            return 404, {"error": f"pipeline {pid} not found", "code": 5}
        name = req.query["name"][0]
        if any(v["pipeline_id"] == pid and v["display_name"] == name for v in self.versions.values()):
            return 409, {"error": f"version {name} exists", "code": 6}
        version = {
            "pipeline_id": pid,
            "pipeline_version_id": str(uuid.uuid4()),
            "display_name": name,
            "name": name,
            "created_at": NOW,
        }
        self.versions[version["pipeline_version_id"]] = version
        return 200, version


def _handler_for(api: FakeKFP):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _serve(self):
            url = urlparse(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            req = Request(self.command, url.path, parse_qs(url.query), body)
            ctype = self.headers.get("Content-Type", "")
            if ctype.startswith("application/json") and body:
                req.json = json.loads(body)
            elif ctype.startswith("multipart/form-data"):
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    f"Content-Type: {ctype}\r\n\r\n".encode() + body
                )
                req.files = {
                    part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                    for part in message.iter_parts()
                    if part.get_filename()
                }
            api.requests.append(req)
            try:
                status, payload = api.handle(req)
            except Exception as exc:  # a malformed request is the client's bug: answer like the gateway does
                status, payload = 400, {"error": str(exc), "code": 3}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

    return Handler


def start(api: FakeKFP | None = None) -> FakeKFP:
    api = api or FakeKFP()
    api.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(api))
    threading.Thread(target=api.server.serve_forever, daemon=True).start()
    return api
