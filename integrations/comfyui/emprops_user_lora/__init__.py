"""EmProps user LoRA loader for ComfyUI.

Install by copying (or linking) this folder into ComfyUI's custom_nodes/.
It registers EmProps_Lora_Loader, which replaces the loader of the same name
in emprops_comfy_nodes: install one of the two, not both.
"""

from .lora_loader import EmPropsLoraLoader

NODE_CLASS_MAPPINGS = {"EmProps_Lora_Loader": EmPropsLoraLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"EmProps_Lora_Loader": "EmProps LoRA Loader (shared or user)"}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "EmPropsLoraLoader"]
