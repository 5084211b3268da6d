"""What LoRA a node's inputs ask for, in either of the shapes workflows have.

The specification's inputs: lora_source ("shared" | "user"), lora_identifier
(a shared file name or a user LoRA's id; also spelt lora_id), strength_model,
strength_clip.

The old EmProps_Lora_Loader's (emprops_comfy_nodes, EmProps_Lora_Loader_Simple):
lora_name, strength_model, strength_clip. An API-format prompt written for it
names lora_name and lacks lora_source and lora_identifier. A UI-format
workflow saved with it keeps widgets_values [lora_name, strength_model,
strength_clip]; ComfyUI's editor assigns saved widget values by position, so
they arrive here as lora_source=<the name>, lora_identifier=<strength_model>,
strength_model=<strength_clip> (strength_clip keeps its default).
"""

import re
from dataclasses import dataclass

SOURCES = ("shared", "user")

# A path this machine's cache handed out for a user LoRA: users/{user_id}/{lora_id}-{name}.
CACHED_USER_PATH = re.compile(r"^users/[0-9a-fA-F-]{36}/(\d+)-[^/]+$")


class InputError(ValueError):
    """The inputs name no LoRA this node can look for."""


@dataclass(frozen=True)
class LoraRequest:
    source: str
    # A shared LoRA's name (for old workflows: as ComfyUI's loras folders know it) or a user LoRA's id.
    identifier: str
    strength_model: float
    strength_clip: float
    # Written for the old node: its fallback (go on without the LoRA) applies.
    legacy: bool


def read_request(
    lora_source=None, lora_identifier=None, strength_model=1.0, strength_clip=1.0, lora_name=None, lora_id=None
):
    source = _text(lora_source)
    # lora_id: the specification's other spelling of a user LoRA's identifier.
    identifier = _text(lora_identifier) or _text(lora_id)
    name = _text(lora_name)
    if source and source not in SOURCES:
        # Old widget values, one position off (see above).
        try:
            shifted_strength = float(identifier)
        except ValueError:
            raise InputError(f'lora_source must be "shared" or "user", got {source!r}') from None
        return _legacy(name or source, shifted_strength, _strength(strength_model, "strength_model"))
    sm = _strength(strength_model, "strength_model")
    sc = _strength(strength_clip, "strength_clip")
    if not source or (not identifier and name):
        return _legacy(name, sm, sc)
    return LoraRequest(source, identifier, sm, sc, legacy=False)


def _legacy(name, strength_model, strength_clip):
    user = CACHED_USER_PATH.match(name.replace("\\", "/"))
    if user:
        # A user LoRA's cache path (ComfyUI lists them): resolved, with its access check, by its id.
        return LoraRequest("user", user.group(1), strength_model, strength_clip, legacy=False)
    return LoraRequest("shared", name, strength_model, strength_clip, legacy=True)


def _text(value):
    return "" if value is None else str(value).strip()


def _strength(value, field):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{field} must be a number, got {value!r}") from None
