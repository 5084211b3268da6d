"""Files on this node and ComfyUI's own LoRA loading, by absolute path.

ComfyUI's modules (folder_paths, comfy.utils, comfy.sd) exist only inside
ComfyUI: they are imported when first needed.
"""

import os


class LoraFileError(Exception):
    """The LoRA's file is not where it must be, or may not be used from there."""


def comfy_lora_dir():
    """ComfyUI's models/loras: the first folder ComfyUI searches for LoRAs."""
    import folder_paths

    return folder_paths.get_folder_paths("loras")[0]


def cached_file(lora_dir, lora):
    """The file the machine-cache answered, checked to exist.

    Its absolute path when given (user LoRAs live where ComfyUI lists no model);
    else its path relative to models/loras, as machine-caches before that field answered.
    """
    if lora.absolute_path:
        full = os.path.realpath(lora.absolute_path)
        if not os.path.isfile(full):
            raise LoraFileError(
                f"the machine-cache answered {lora.absolute_path!r}, which is not a file here: this ComfyUI must "
                "see the machine-cache's directories at the same paths"
            )
        return full
    relative = lora.path
    base = os.path.realpath(lora_dir)
    full = os.path.realpath(os.path.join(base, *relative.split("/")))
    if os.path.commonpath([base, full]) != base:
        raise LoraFileError(f"the machine-cache answered {relative!r}, which is outside {lora_dir}")
    if not os.path.isfile(full):
        raise LoraFileError(
            f"the machine-cache answered {relative!r}, but {full} is not a file: COMFYUI_LORA_DIR must be "
            "the machine-cache's LoRA directory as this ComfyUI sees it"
        )
    return full


def file_in_comfy_loras(name, lora_dir):
    """A LoRA as ComfyUI's loras folders have it (what the old node loaded), or None.

    Never a file in the machine-cache's users/ directory: user LoRAs are only
    had through the machine-cache, which checks the job's user.
    """
    import folder_paths

    found = folder_paths.get_full_path("loras", name)
    if not found:
        return None
    full = os.path.realpath(found)
    users = os.path.join(os.path.realpath(lora_dir), "users")
    if os.path.commonpath([users, full]) == users:
        raise LoraFileError(f"{name!r} is a user LoRA's cached file: name it by lora_source=user and its id")
    return full


class LoraApplier:
    """What ComfyUI's LoraLoader does once it has a path: load the file safely, patch model and clip."""

    def __init__(self):
        self.loaded = None

    def apply(self, model, clip, path, strength_model, strength_clip):
        import comfy.sd
        import comfy.utils

        # The last file stays loaded for the next run of this node, as LoraLoader keeps it;
        # size and mtime in the key, so a file replaced at the same path is read again.
        stat = os.stat(path)
        key = (path, stat.st_size, stat.st_mtime_ns)
        lora = self.loaded[1] if self.loaded is not None and self.loaded[0] == key else None
        if lora is None:
            self.loaded = None
            lora = comfy.utils.load_torch_file(path, safe_load=True)
            self.loaded = (key, lora)
        return comfy.sd.load_lora_for_models(model, clip, lora, strength_model, strength_clip)
