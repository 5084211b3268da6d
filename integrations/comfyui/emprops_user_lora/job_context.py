"""Which job (and so which user) a node runs for.

The EmProps job runner puts the job into the prompt it queues, under
extra_data.extra_pnginfo.emprops_job:

    {"emprops_job": {"user_id": "<uuid>", "job_id": "...",
                     "workflow_id": "...", "workflow_name": "..."}}

ComfyUI hands extra_pnginfo to nodes that ask for it (a hidden input), so
every node of the prompt sees its own job even when jobs of several users
run one after another on one ComfyUI. A worker that runs a single job per
process may set EMPROPS_JOB_USER_ID (and EMPROPS_JOB_ID, EMPROPS_WORKFLOW_ID,
EMPROPS_WORKFLOW_NAME) instead; the prompt wins when both are present.
"""

import os
from dataclasses import dataclass

EXTRA_PNGINFO_KEY = "emprops_job"


@dataclass(frozen=True)
class JobContext:
    user_id: str
    job_id: str = ""
    workflow_id: str = ""
    workflow_name: str = ""


class JobContextError(ValueError):
    """The job's user cannot be determined."""


def job_context(extra_pnginfo=None, env=None, user_required=True):
    """The job the prompt runs for. A shared LoRA needs no user: user_required=False gives "" when unknown."""
    env = os.environ if env is None else env
    job = extra_pnginfo.get(EXTRA_PNGINFO_KEY) if isinstance(extra_pnginfo, dict) else None
    if job is not None and not isinstance(job, dict):
        raise JobContextError(f"extra_pnginfo.{EXTRA_PNGINFO_KEY} must be an object, got {type(job).__name__}")
    job = job or {}

    def pick(key, env_name):
        value = job.get(key)
        if value is None or value == "":
            value = env.get(env_name, "")
        return str(value)

    user_id = pick("user_id", "EMPROPS_JOB_USER_ID").strip()
    if not user_id and user_required:
        raise JobContextError(
            "the job's user is unknown: the job runner must put "
            f'{{"{EXTRA_PNGINFO_KEY}": {{"user_id": ...}}}} into the prompt\'s extra_pnginfo '
            "(or set EMPROPS_JOB_USER_ID for a single-job worker)"
        )
    return JobContext(
        user_id=user_id,
        job_id=pick("job_id", "EMPROPS_JOB_ID"),
        workflow_id=pick("workflow_id", "EMPROPS_WORKFLOW_ID"),
        workflow_name=pick("workflow_name", "EMPROPS_WORKFLOW_NAME"),
    )
