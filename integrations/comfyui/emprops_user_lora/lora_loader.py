"""EmProps_Lora_Loader: a shared or a user LoRA, made local by the machine-cache, applied by ComfyUI's own loading code."""

import logging

from .comfy_files import LoraApplier, LoraFileError, cached_file, comfy_lora_dir, file_in_comfy_loras
from .inputs import InputError, read_request
from .job_context import JobContextError, job_context
from .machine_cache_client import MachineCacheError, ensure_lora
from .settings import CONTINUE, load_settings

log = logging.getLogger("emprops.lora")

STRENGTH = {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}


class LoraUnavailableError(RuntimeError):
    """The LoRA could not be loaded and the setting says the job must fail."""


class DownloadProgressBar:
    """ComfyUI's progress bar on the node (comfy.utils.ProgressBar) while the machine-cache fetches the LoRA.

    Created at the first bytes of a download, so a cached LoRA shows none;
    it counts bytes, up to the file's size.
    """

    def __init__(self, progress_bar_class):
        self._progress_bar_class = progress_bar_class
        self._bar = None

    def __call__(self, progress):
        if progress.phase not in ("downloading", "verifying", "ready") or progress.total_bytes <= 0:
            return
        if self._bar is None:
            if progress.phase == "ready":
                return
            self._bar = self._progress_bar_class(progress.total_bytes)
        self._bar.update_absolute(progress.bytes_done, progress.total_bytes)


def _download_progress_bar():
    """A DownloadProgressBar, or None where ComfyUI has no ProgressBar (the node then asks without progress)."""
    try:
        from comfy.utils import ProgressBar
    except ImportError:
        return None
    return DownloadProgressBar(ProgressBar)


def _interrupted(err):
    """ComfyUI's interrupt (the user cancelled the prompt; raised by the progress bar's hook): never swallowed."""
    try:
        from comfy.model_management import InterruptProcessingException
    except ImportError:
        return False
    return isinstance(err, InterruptProcessingException)


def _notify(unique_id, message):
    """A toast in ComfyUI's front end, when it runs (the warning is also logged and in the node's ui output)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    PromptServer.instance.send_sync("emprops.lora.warning", {"node": unique_id, "message": message})


class EmPropsLoraLoader:
    """Loads a LoRA by lora_source and lora_identifier, or by the old node's lora_name."""

    CATEGORY = "EmProps"
    RETURN_TYPES = ("MODEL", "CLIP")
    FUNCTION = "load_lora"
    DESCRIPTION = (
        "Loads a shared LoRA by file name or one of the job's user's LoRAs by id. "
        "The machine-cache downloads it on first use and keeps it cached."
    )

    def __init__(self):
        self.applier = LoraApplier()

    @classmethod
    def INPUT_TYPES(cls):
        # Optional, so that prompts written for the old node (lora_name only) pass ComfyUI's validation;
        # the widgets keep the specification's order, which saved UI workflows rely on.
        return {
            "required": {"model": ("MODEL",), "clip": ("CLIP",)},
            "optional": {
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
                "strength_model": ("FLOAT", dict(STRENGTH)),
                "strength_clip": ("FLOAT", dict(STRENGTH)),
                "lora_name": (
                    "STRING",
                    {
                        "default": "",
                        "forceInput": True,
                        "tooltip": "The old EmProps_Lora_Loader's input: a LoRA file name "
                        "(from ComfyUI's loras folders, else shared storage)",
                    },
                ),
                "lora_id": (
                    "STRING",
                    {"default": "", "forceInput": True, "tooltip": "The specification's other name for lora_identifier"},
                ),
            },
            "hidden": {"extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, lora_source=None):
        # Listed here, lora_source skips ComfyUI's check against its choices: a workflow saved with the
        # old node holds its lora_name in this widget's place, and load_lora reads it from there.
        return True

    def load_lora(
        self,
        model,
        clip,
        lora_source=None,
        lora_identifier=None,
        strength_model=1.0,
        strength_clip=1.0,
        lora_name=None,
        lora_id=None,
        extra_pnginfo=None,
        unique_id=None,
    ):
        settings = load_settings()
        try:
            request = read_request(lora_source, lora_identifier, strength_model, strength_clip, lora_name, lora_id)
        except InputError as err:
            message = f"EmProps LoRA could not be loaded: {err}"
            return self._unavailable(settings, False, message, model, clip, unique_id)
        if request.legacy and not request.identifier:
            # The old node: no name, no LoRA.
            return (model, clip)
        if request.strength_model == 0 and request.strength_clip == 0:
            # As ComfyUI's LoraLoader: nothing to apply.
            return (model, clip)
        label = f"{request.source}:{request.identifier or '?'}"
        try:
            path, how = self._local_path(settings, request, extra_pnginfo)
            patched = self.applier.apply(model, clip, path, request.strength_model, request.strength_clip)
        except (MachineCacheError, JobContextError, LoraFileError) as err:
            message = f"EmProps LoRA {label} could not be loaded: {err}"
            return self._unavailable(settings, request.legacy, message, model, clip, unique_id)
        except Exception as err:
            if not request.legacy or _interrupted(err):
                raise
            # The old node went on without a LoRA whatever failed.
            message = f"EmProps LoRA {label} could not be loaded: {type(err).__name__}: {err}"
            return self._unavailable(settings, True, message, model, clip, unique_id)
        log.info("LoRA %s -> %s (%s)", label, path, how)
        return patched

    def _local_path(self, settings, request, extra_pnginfo):
        """The absolute path of the LoRA's file on this node, fetched by the machine-cache when needed."""
        lora_dir = settings.lora_dir or comfy_lora_dir()
        if request.source == "shared":
            # Where the old node found shared LoRAs: ComfyUI's own loras folders (models/loras, extra paths).
            found = file_in_comfy_loras(request.identifier, lora_dir)
            if found:
                return found, "in ComfyUI's loras folders"
            job = job_context(extra_pnginfo, user_required=False)
        else:
            job = job_context(extra_pnginfo)
        identifier = request.identifier
        if request.legacy and identifier.startswith("shared/"):
            # A path this cache handed out for a shared LoRA, no longer on disk: fetched again by its name.
            identifier = identifier[len("shared/") :]
        lora = ensure_lora(settings, job, request.source, identifier, on_progress=_download_progress_bar())
        return cached_file(lora_dir, lora), "cache hit" if lora.cache_hit else "downloaded"

    def _unavailable(self, settings, legacy, message, model, clip, unique_id):
        # A workflow written for the old node keeps its fallback (go on); the others follow EMPROPS_LORA_ON_ERROR.
        setting, on_error = (
            ("EMPROPS_LORA_LEGACY_ON_ERROR", settings.legacy_on_error)
            if legacy
            else ("EMPROPS_LORA_ON_ERROR", settings.on_error)
        )
        if on_error != CONTINUE:
            raise LoraUnavailableError(message)
        # The graceful fallback: go on without it, visibly.
        warning = f"{message}. The image is generated WITHOUT this LoRA ({setting}=continue)."
        log.warning(warning)
        _notify(unique_id, warning)
        return {"ui": {"emprops_lora_warnings": [warning]}, "result": (model, clip)}
