"""EnsureLoras on the local machine-cache, over Connect JSON (a plain HTTP POST)."""

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

SERVICE = "emprops.cache.v1.MachineCacheService"
SOURCES = {"shared": "LORA_SOURCE_SHARED", "user": "LORA_SOURCE_USER"}
# Reasons are "LORA_NOT_FOUND" as in ErrorInfo; earlier servers prefixed item errors' reasons.
REASON_PREFIX = "ERROR_REASON_"


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
    reason, metadata = "", {}
    for detail in payload.get("details") or []:
        if detail.get("type") == "google.rpc.ErrorInfo" and isinstance(detail.get("debug"), dict):
            reason = detail["debug"].get("reason", "")
            metadata = detail["debug"].get("metadata") or {}
            break
    return MachineCacheError(
        payload.get("code", "unknown"), reason, payload.get("message") or f"HTTP {status}", metadata
    )


def ensure_lora(settings, job, source, identifier):
    """The local path of one LoRA, downloading it first on a cache miss."""
    if source not in SOURCES:
        raise MachineCacheError("invalid_argument", "INVALID_REFERENCE", f'lora_source must be "shared" or "user", got {source!r}')
    request = {
        "jobId": job.job_id,
        "userId": job.user_id,
        "workflowId": job.workflow_id,
        "workflowName": job.workflow_name,
        "refs": [{"source": SOURCES[source], "identifier": identifier}],
    }
    url = f"{settings.machine_cache_url}/{SERVICE}/EnsureLoras"
    headers = {"content-type": "application/json", "connect-protocol-version": "1"}
    if settings.machine_token:
        headers["authorization"] = f"Bearer {settings.machine_token}"
    req = urllib.request.Request(url, data=json.dumps(request).encode("utf-8"), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=settings.timeout_seconds) as res:
            payload = json.load(res)
    except urllib.error.HTTPError as err:
        raise _error_from_body(err.code, err.read()) from None
    except (urllib.error.URLError, OSError) as err:
        cause = getattr(err, "reason", err)
        raise MachineCacheError(
            "unavailable", "", f"the machine-cache at {settings.machine_cache_url} is not reachable: {cause}"
        ) from None

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
