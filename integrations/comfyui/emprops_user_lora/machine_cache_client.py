"""EnsureLoras on the local machine-cache, over Connect JSON (a plain HTTP POST).

With a progress callback, EnsureLorasWithProgress instead: the same request,
answered as a Connect server stream (https://connectrpc.com/docs/protocol/#streaming-response):
enveloped JSON messages, each reference's progress and then the results.
"""

import json
import struct
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

SERVICE = "emprops.cache.v1.MachineCacheService"
SOURCES = {"shared": "LORA_SOURCE_SHARED", "user": "LORA_SOURCE_USER"}
# Reasons are "LORA_NOT_FOUND" as in ErrorInfo; earlier servers prefixed item errors' reasons.
REASON_PREFIX = "ERROR_REASON_"
PHASE_PREFIX = "LORA_PHASE_"
# A Connect envelope: one flags byte, then the message's length (big-endian uint32).
ENVELOPE = struct.Struct(">BI")
END_STREAM = 0b10


class MachineCacheError(Exception):
    """The LoRA could not be had: the server's code, reason and message."""

    def __init__(self, code, reason, message, metadata=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata = metadata or {}

    def __str__(self):
        return f"{self.message} [{self.reason or self.code}]"


@dataclass(frozen=True)
class EnsuredLora:
    # Relative to ComfyUI's models/loras, with "/" separators, when ComfyUI lists the file there (shared LoRAs);
    # "" for a user LoRA kept where ComfyUI lists no model.
    path: str
    # The file on this node; "" from machine-caches older than this field.
    absolute_path: str
    cache_hit: bool
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class LoraProgress:
    # "resolving", "downloading", "verifying", "ready" or "error".
    phase: str
    # Bytes of the file on this node so far, of total_bytes (0 while resolving).
    bytes_done: int
    total_bytes: int
    # This caller waits for a download another request started.
    joined: bool


class _NoStreamingRpc(Exception):
    """The machine-cache predates EnsureLorasWithProgress."""


def _reason(name):
    name = name or ""
    return name[len(REASON_PREFIX):] if name.startswith(REASON_PREFIX) else name


def _error_from_body(status, body):
    """A Connect error body: {"code", "message", "details": [{"type": "google.rpc.ErrorInfo", "debug": {...}}]}."""
    try:
        payload = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()[:200]
        return MachineCacheError("unknown", "", f"the machine-cache answered HTTP {status}: {text}")
    return _error_from_payload(status, payload)


def _error_from_payload(status, payload):
    reason, metadata = "", {}
    for detail in payload.get("details") or []:
        if detail.get("type") == "google.rpc.ErrorInfo" and isinstance(detail.get("debug"), dict):
            reason = detail["debug"].get("reason", "")
            metadata = detail["debug"].get("metadata") or {}
            break
    return MachineCacheError(
        payload.get("code", "unknown"), reason, payload.get("message") or f"HTTP {status}", metadata
    )


def ensure_lora(settings, job, source, identifier, on_progress=None):
    """The local path of one LoRA, downloading it first on a cache miss.

    With `on_progress`, it is called with a LoraProgress at each step the
    machine-cache reports (EnsureLorasWithProgress); a machine-cache without
    that RPC is asked the unary way, without progress.
    """
    if source not in SOURCES:
        raise MachineCacheError("invalid_argument", "INVALID_REFERENCE", f'lora_source must be "shared" or "user", got {source!r}')
    request = {
        "jobId": job.job_id,
        "userId": job.user_id,
        "workflowId": job.workflow_id,
        "workflowName": job.workflow_name,
        "refs": [{"source": SOURCES[source], "identifier": identifier}],
    }
    payload = None
    if on_progress is not None:
        try:
            payload = _ensure_streamed(settings, request, on_progress)
        except _NoStreamingRpc:
            payload = None
    if payload is None:
        payload = _ensure_unary(settings, request)
    return _ensured(payload)


def _headers(settings, content_type):
    headers = {"content-type": content_type, "connect-protocol-version": "1"}
    if settings.machine_token:
        headers["authorization"] = f"Bearer {settings.machine_token}"
    return headers


def _unreachable(settings, err):
    cause = getattr(err, "reason", err)
    return MachineCacheError(
        "unavailable", "", f"the machine-cache at {settings.machine_cache_url} is not reachable: {cause}"
    )


def _ensure_unary(settings, request):
    url = f"{settings.machine_cache_url}/{SERVICE}/EnsureLoras"
    body = json.dumps(request).encode("utf-8")
    req = urllib.request.Request(url, data=body, headers=_headers(settings, "application/json"), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=settings.timeout_seconds) as res:
            return json.load(res)
    except urllib.error.HTTPError as err:
        raise _error_from_body(err.code, err.read()) from None
    except (urllib.error.URLError, OSError) as err:
        raise _unreachable(settings, err) from None


def _read_exactly(res, n):
    data = b""
    while len(data) < n:
        chunk = res.read(n - len(data))
        if not chunk:
            raise MachineCacheError("unavailable", "", "the machine-cache ended EnsureLorasWithProgress mid-message")
        data += chunk
    return data


def _ensure_streamed(settings, request, on_progress):
    """EnsureLorasWithProgress: progress to `on_progress`, then the results as EnsureLoras answers them."""
    url = f"{settings.machine_cache_url}/{SERVICE}/EnsureLorasWithProgress"
    message = json.dumps(request).encode("utf-8")
    body = ENVELOPE.pack(0, len(message)) + message
    req = urllib.request.Request(url, data=body, headers=_headers(settings, "application/connect+json"), method="POST")
    deadline = time.monotonic() + settings.timeout_seconds
    result = None
    try:
        with urllib.request.urlopen(req, timeout=settings.timeout_seconds) as res:
            while True:
                if time.monotonic() > deadline:
                    raise MachineCacheError(
                        "deadline_exceeded",
                        "",
                        f"the LoRA was not ready within EMPROPS_LORA_TIMEOUT_SECONDS ({settings.timeout_seconds:g} s)",
                    )
                flags, length = ENVELOPE.unpack(_read_exactly(res, ENVELOPE.size))
                try:
                    payload = json.loads(_read_exactly(res, length)) if length else {}
                except ValueError as err:
                    raise MachineCacheError("internal", "", f"EnsureLorasWithProgress sent a message that is not JSON: {err}") from None
                if flags & END_STREAM:
                    # The end of the stream: {} or {"error": {...}} when the call failed as a whole.
                    if payload.get("error"):
                        raise _error_from_payload(res.status, payload["error"])
                    break
                if "progress" in payload:
                    on_progress(_progress(payload["progress"]))
                elif "result" in payload:
                    result = payload["result"]
    except urllib.error.HTTPError as err:
        if err.code == 404:
            # A machine-cache from before EnsureLorasWithProgress: the route does not exist.
            raise _NoStreamingRpc() from None
        raise _error_from_body(err.code, err.read()) from None
    except (urllib.error.URLError, OSError) as err:
        raise _unreachable(settings, err) from None
    if result is None:
        raise MachineCacheError("internal", "", "EnsureLorasWithProgress ended without its results")
    return result


def _progress(message):
    phase = message.get("phase", "")
    return LoraProgress(
        phase=(phase[len(PHASE_PREFIX):] if phase.startswith(PHASE_PREFIX) else phase).lower(),
        bytes_done=int(message.get("bytesDone", "0")),
        total_bytes=int(message.get("totalBytes", "0")),
        joined=bool(message.get("joined", False)),
    )


def _ensured(payload):
    results = payload.get("results") or []
    if len(results) != 1:
        raise MachineCacheError("internal", "", f"EnsureLoras answered {len(results)} results for one reference")
    result = results[0]
    error = result.get("error")
    if error:
        raise MachineCacheError(
            error.get("code", "unknown"), _reason(error.get("reason")), error.get("message", ""), error.get("metadata")
        )
    path = result.get("path", "")
    absolute_path = result.get("absolutePath", "")
    if not path and not absolute_path:
        raise MachineCacheError("internal", "", "EnsureLoras answered without a path")
    return EnsuredLora(
        path=path,
        absolute_path=absolute_path,
        cache_hit=bool(result.get("cacheHit", False)),
        size_bytes=int(result.get("sizeBytes", "0")),
        sha256=result.get("sha256", ""),
    )
