"""The node's settings, read from the environment at each call."""

import os
from dataclasses import dataclass

FAIL = "fail"
CONTINUE = "continue"


class SettingsError(ValueError):
    """A setting has a value the node cannot use."""


@dataclass(frozen=True)
class Settings:
    # The local machine-cache (Connect JSON over HTTP).
    machine_cache_url: str
    # A token with the "machine" role, the one the machine-cache itself uses.
    machine_token: str
    # What a LoRA that cannot be had does to a job using the node's inputs: "fail" (default) or "continue".
    on_error: str
    # The same for a workflow written for the old node (lora_name): "continue" (default, as it did) or "fail".
    legacy_on_error: str
    # Seconds to wait for EnsureLoras (it downloads on a cache miss).
    timeout_seconds: float
    # The machine-cache's COMFYUI_LORA_DIR as this process sees it; "" means ComfyUI's models/loras.
    lora_dir: str


def _choice(env, name, default):
    value = env.get(name, default).strip().lower() or default
    if value not in (FAIL, CONTINUE):
        raise SettingsError(f'{name} must be "{FAIL}" or "{CONTINUE}", got {value!r}')
    return value


def load_settings(env=None):
    env = os.environ if env is None else env
    raw_timeout = env.get("EMPROPS_LORA_TIMEOUT_SECONDS", "600")
    try:
        timeout = float(raw_timeout)
    except ValueError:
        timeout = -1.0
    if timeout <= 0:
        raise SettingsError(
            f"EMPROPS_LORA_TIMEOUT_SECONDS must be a positive number, got {raw_timeout!r}"
        )
    return Settings(
        machine_cache_url=env.get("MACHINE_CACHE_URL", "http://127.0.0.1:50053").rstrip("/"),
        machine_token=env.get("MACHINE_TOKEN", ""),
        on_error=_choice(env, "EMPROPS_LORA_ON_ERROR", FAIL),
        legacy_on_error=_choice(env, "EMPROPS_LORA_LEGACY_ON_ERROR", CONTINUE),
        timeout_seconds=timeout,
        lora_dir=env.get("COMFYUI_LORA_DIR", "").strip(),
    )
