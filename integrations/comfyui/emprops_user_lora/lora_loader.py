"""EmProps_Lora_Loader: a shared or a user LoRA, made local by the machine-cache, applied by ComfyUI's LoraLoader."""

import logging

from .job_context import JobContextError, job_context
from .machine_cache_client import MachineCacheError, ensure_lora
from .settings import CONTINUE, load_settings

log = logging.getLogger("emprops.lora")


class LoraUnavailableError(RuntimeError):
    """The LoRA could not be loaded and the setting says the job must fail."""


def _comfy_lora_loader():
    # ComfyUI's built-in nodes module, imported when first needed (it exists only inside ComfyUI).
    import nodes

    return nodes.LoraLoader()


def _notify(unique_id, message):
    """A toast in ComfyUI's front end, when it runs (the warning is also logged and in the node's ui output)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    PromptServer.instance.send_sync("emprops.lora.warning", {"node": unique_id, "message": message})


class EmPropsLoraLoader:
    """Loads a LoRA by lora_source and lora_identifier, as the workflow JSON names it."""

    CATEGORY = "EmProps"
    RETURN_TYPES = ("MODEL", "CLIP")
    FUNCTION = "load_lora"
    DESCRIPTION = (
        "Loads a shared LoRA by file name or one of the job's user's LoRAs by id. "
        "The machine-cache downloads it on first use and keeps it cached."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "clip": ("CLIP",),
                "lora_source": (
                    ["shared", "user"],
                    {"default": "shared", "tooltip": "Load from shared storage or user's personal LoRAs"},
                ),
                "lora_identifier": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": False,
                        "tooltip": "For shared: filename (e.g., 'style.safetensors'). For user: flat_file ID (e.g., '123')",
                    },
                ),
                "strength_model": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}),
                "strength_clip": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}),
            },
            "hidden": {"extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"},
        }

    def load_lora(
        self,
        model,
        clip,
        lora_source,
        lora_identifier,
        strength_model,
        strength_clip,
        extra_pnginfo=None,
        unique_id=None,
    ):
        settings = load_settings()
        identifier = (lora_identifier or "").strip()
        try:
            if not identifier:
                raise MachineCacheError("invalid_argument", "INVALID_REFERENCE", "lora_identifier is empty")
            job = job_context(extra_pnginfo)
            lora = ensure_lora(settings, job, lora_source, identifier)
        except (MachineCacheError, JobContextError) as err:
            message = f"EmProps LoRA {lora_source}:{identifier or '?'} could not be loaded: {err}"
            if settings.on_error != CONTINUE:
                raise LoraUnavailableError(message) from err
            # The setting chose the graceful fallback: go on without it, visibly.
            warning = f"{message}. The image is generated WITHOUT this LoRA (EMPROPS_LORA_ON_ERROR=continue)."
            log.warning(warning)
            _notify(unique_id, warning)
            return {"ui": {"emprops_lora_warnings": [warning]}, "result": (model, clip)}

        log.info(
            "LoRA %s:%s -> %s (%s)", lora_source, identifier, lora.path, "cache hit" if lora.cache_hit else "downloaded"
        )
        # The path relative to models/loras, sub-folders included: LoraLoader resolves it there.
        return _comfy_lora_loader().load_lora(model, clip, lora.path, strength_model, strength_clip)
