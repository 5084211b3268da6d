"""The parts of ComfyUI a workflow with EmProps_Lora_Loader goes through, for tests where ComfyUI is not installed.

Each piece follows ComfyUI's own code (comfyanonymous/ComfyUI: folder_paths.py,
execution.py, comfy/utils.py; Comfy-Org/ComfyUI_frontend for the editor),
reduced to what a LoRA loader node meets, and records what it was asked:

- folder_paths: the "loras" folders; get_full_path() looks a name up in them in order.
- comfy.utils.load_torch_file(path, safe_load): reads the real file (a safetensors
  header: tensor names, dtypes, shapes) and records the path and safe_load.
- comfy.sd.load_lora_for_models(): records the call and returns patched stand-ins.
- comfy.utils.ProgressBar: ComfyUI's class as it is (total, update_absolute, update),
  with the global hook ComfyUI's server installs, which here records the
  "progress" message it would send the front end ({"value", "max", "node"})
  after checking for an interrupt, as ComfyUI's hook does.
  comfyui(..., progress_bar=False) leaves it out, as in a ComfyUI without it.
- comfy.model_management: interrupt_current_processing() (the user pressing
  Cancel) and the InterruptProcessingException the next check raises.
- server.PromptServer.instance.send_sync(): records messages to the front end.
- graph_to_prompt(): the editor turning a saved UI workflow into an API prompt:
  saved widgets_values go to the node's widgets by position (widget inputs in
  INPUT_TYPES order, required then optional; forceInput and socket types have
  no widget; a widget without a saved value keeps its default); links become
  [node_id, output_index].
- run_prompt(): the server validating a prompt (required inputs present,
  STRING/FLOAT/INT values converted, min/max, a combo value among its choices
  unless VALIDATE_INPUTS names the input, then VALIDATE_INPUTS) and running the
  nodes the LoRA loaders need, with the hidden EXTRA_PNGINFO and UNIQUE_ID inputs.
"""

import inspect
import json
import os
import struct
import sys
import types
from contextlib import contextmanager

WIDGET_TYPES = ("STRING", "FLOAT", "INT", "BOOLEAN")


class Recorder:
    def __init__(self):
        self.loaded = []  # (path, safe_load) per load_torch_file
        self.applied = []  # per load_lora_for_models
        self.messages = []  # (event, data) sent to the front end
        self.bars = 0  # ProgressBar objects made
        self.progress = []  # the "progress" messages a ProgressBar sends, in order


class Patched:
    """A MODEL or CLIP with a LoRA applied: what it was, which file, how strongly."""

    def __init__(self, base, lora_file, strength):
        self.base, self.lora_file, self.strength = base, lora_file, strength

    def __repr__(self):
        return f"Patched({self.base!r}, {self.lora_file!r}, {self.strength})"


class CheckpointLoaderSimple:
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": ("STRING",)}}

    def load_checkpoint(self, ckpt_name):
        return (f"MODEL:{ckpt_name}", f"CLIP:{ckpt_name}", f"VAE:{ckpt_name}")


class Downstream:
    """A node after the LoRA loaders (text encoders, sampler, saver): part of the prompt, never run here."""

    RETURN_TYPES = ()
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}


def node_classes(**extra):
    """The node types of the workflows under test: the checkpoint loader, the stages after the LoRAs, and `extra`."""
    downstream = ["CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage", "EmProps_Cloud_Storage_Saver"]
    return {"CheckpointLoaderSimple": CheckpointLoaderSimple, **{name: Downstream for name in downstream}, **extra}


def _read_safetensors(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return {name: (spec["dtype"], tuple(spec["shape"])) for name, spec in header.items()}


@contextmanager
def comfyui(lora_folders, progress_bar=True):
    """ComfyUI's modules in sys.modules while the block runs, with these folders for "loras"."""
    record = Recorder()

    folder_paths = types.ModuleType("folder_paths")
    folder_paths.folder_names_and_paths = {"loras": (list(lora_folders), {".safetensors", ".pt", ".ckpt"})}

    def get_folder_paths(folder_name):
        return folder_paths.folder_names_and_paths[folder_name][0][:]

    def get_full_path(folder_name, filename):
        if folder_name not in folder_paths.folder_names_and_paths:
            return None
        # As ComfyUI: the name cannot climb out of a folder.
        filename = os.path.relpath(os.path.join("/", filename), "/")
        for folder in folder_paths.folder_names_and_paths[folder_name][0]:
            full = os.path.join(folder, filename)
            if os.path.isfile(full):
                return full
        return None

    folder_paths.get_folder_paths = get_folder_paths
    folder_paths.get_full_path = get_full_path

    comfy = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    sd = types.ModuleType("comfy.sd")

    def load_torch_file(ckpt, safe_load=False, device=None):
        record.loaded.append((ckpt, safe_load))
        if not ckpt.lower().endswith((".safetensors", ".sft")):
            raise NotImplementedError(f"the stand-in reads safetensors only: {ckpt}")
        return {"__file__": ckpt, "tensors": _read_safetensors(ckpt)}

    def load_lora_for_models(model, clip, lora, strength_model, strength_clip):
        record.applied.append(
            {"model": model, "clip": clip, "file": lora["__file__"], "strengths": (strength_model, strength_clip)}
        )
        return (Patched(model, lora["__file__"], strength_model), Patched(clip, lora["__file__"], strength_clip))

    utils.load_torch_file = load_torch_file

    model_management = types.ModuleType("comfy.model_management")

    class InterruptProcessingException(Exception):
        pass

    model_management.InterruptProcessingException = InterruptProcessingException
    model_management.interrupt_processing = False

    def interrupt_current_processing(value=True):
        model_management.interrupt_processing = value

    def throw_exception_if_processing_interrupted():
        if model_management.interrupt_processing:
            model_management.interrupt_processing = False
            raise InterruptProcessingException()

    model_management.interrupt_current_processing = interrupt_current_processing
    model_management.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted

    # comfy/utils.py: the hook is the server's (main.py: stop if interrupted, else send
    # {"value", "max", "prompt_id", "node"} as "progress").
    def progress_hook(value, total, preview, prompt_id=None, node_id=None):
        throw_exception_if_processing_interrupted()
        record.progress.append({"value": value, "max": total, "node": node_id})

    class ProgressBar:
        def __init__(self, total, node_id=None):
            record.bars += 1
            self.total = total
            self.current = 0
            self.hook = progress_hook
            self.node_id = node_id

        def update_absolute(self, value, total=None, preview=None):
            if total is not None:
                self.total = total
            if value > self.total:
                value = self.total
            self.current = value
            if self.hook is not None:
                self.hook(self.current, self.total, preview, node_id=self.node_id)

        def update(self, value):
            self.update_absolute(self.current + value)

    if progress_bar:
        utils.ProgressBar = ProgressBar
    sd.load_lora_for_models = load_lora_for_models
    comfy.utils, comfy.sd, comfy.model_management = utils, sd, model_management

    server = types.ModuleType("server")

    class PromptServer:
        instance = None

        def send_sync(self, event, data, sid=None):
            record.messages.append((event, data))

    PromptServer.instance = PromptServer()
    server.PromptServer = PromptServer

    modules = {
        "folder_paths": folder_paths,
        "comfy": comfy,
        "comfy.utils": utils,
        "comfy.sd": sd,
        "comfy.model_management": model_management,
        "server": server,
    }
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield record
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _inputs_in_order(class_def):
    spec = class_def.INPUT_TYPES()
    return [(name, info, "required") for name, info in spec.get("required", {}).items()] + [
        (name, info, "optional") for name, info in spec.get("optional", {}).items()
    ]


def _has_widget(info):
    kind, options = info[0], (info[1] if len(info) > 1 else {})
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput", False)


def _default(info):
    kind, options = info[0], (info[1] if len(info) > 1 else {})
    if "default" in options:
        return options["default"]
    return kind[0] if isinstance(kind, list) else {"STRING": "", "FLOAT": 0.0, "INT": 0, "BOOLEAN": False}[kind]


def graph_to_prompt(workflow, node_classes):
    """The API prompt ComfyUI's editor queues for a saved UI workflow."""
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode") in (2, 4):  # muted, bypassed
            continue
        class_def = node_classes[node["type"]]
        saved = list(node.get("widgets_values") or [])
        inputs = {}
        widgets = [(name, info) for name, info, _ in _inputs_in_order(class_def) if _has_widget(info)]
        for i, (name, info) in enumerate(widgets):
            inputs[name] = saved[i] if i < len(saved) else _default(info)
        for slot in node.get("inputs") or []:
            link = links.get(slot.get("link"))
            if link is not None:
                inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


class PromptInvalid(Exception):
    """What ComfyUI answers a /prompt it refuses (HTTP 400)."""

    def __init__(self, errors):
        super().__init__("; ".join(f"{e['type']}: {e['details']}" for e in errors))
        self.errors = errors


def _validate(node_id, node, class_def):
    errors = []
    inputs = node["inputs"]
    validate_args = []
    if hasattr(class_def, "VALIDATE_INPUTS"):
        validate_args = inspect.getfullargspec(class_def.VALIDATE_INPUTS).args
    for name, info, category in _inputs_in_order(class_def):
        kind = info[0]
        options = info[1] if len(info) > 1 else {}
        if name not in inputs:
            if category == "required":
                errors.append({"type": "required_input_missing", "details": f"#{node_id} {name}"})
            continue
        value = inputs[name]
        if isinstance(value, list):
            continue
        try:
            if kind == "INT":
                value = int(value)
            elif kind == "FLOAT":
                value = float(value)
            elif kind == "STRING":
                value = str(value)
        except (TypeError, ValueError) as err:
            errors.append({"type": "invalid_input_type", "details": f"#{node_id} {name}, {value!r}, {err}"})
            continue
        inputs[name] = value
        if "min" in options and value < options["min"]:
            errors.append({"type": "value_smaller_than_min", "details": f"#{node_id} {name}"})
        if "max" in options and value > options["max"]:
            errors.append({"type": "value_bigger_than_max", "details": f"#{node_id} {name}"})
        if isinstance(kind, list) and name not in validate_args and value not in kind:
            errors.append({"type": "value_not_in_list", "details": f"#{node_id} {name}: {value!r} not in {kind}"})
    if validate_args:
        given = {name: inputs[name] for name in validate_args if name in inputs and not isinstance(inputs[name], list)}
        verdict = class_def.VALIDATE_INPUTS(**given)
        if verdict is not True:
            errors.append({"type": "custom_validation_failed", "details": f"#{node_id} {verdict}"})
    return errors


def run_prompt(prompt, node_classes, extra_data=None, run_types=("EmProps_Lora_Loader",)):
    """Validates the whole prompt, then runs every node of `run_types` and what it depends on.

    Returns {node_id: {"result": (outputs...), "ui": {...}}} for the nodes run.
    """
    extra_data = extra_data or {}
    errors = []
    for node_id, node in prompt.items():
        class_def = node_classes.get(node["class_type"])
        if class_def is None:
            errors.append({"type": "invalid_prompt", "details": f"node {node['class_type']} does not exist"})
        elif node["class_type"] in ("CheckpointLoaderSimple",) + tuple(run_types):
            errors += _validate(node_id, node, class_def)
    if errors:
        raise PromptInvalid(errors)

    outputs = {}

    def run(node_id):
        if node_id in outputs:
            return outputs[node_id]
        node = prompt[node_id]
        class_def = node_classes[node["class_type"]]
        spec = class_def.INPUT_TYPES()
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        kwargs = {}
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                kwargs[name] = run(value[0])["result"][value[1]]
            elif name in declared:
                kwargs[name] = value
        for name, kind in spec.get("hidden", {}).items():
            if kind == "EXTRA_PNGINFO":
                kwargs[name] = extra_data.get("extra_pnginfo")
            elif kind == "UNIQUE_ID":
                kwargs[name] = node_id
        returned = getattr(class_def(), class_def.FUNCTION)(**kwargs)
        if isinstance(returned, dict):
            outputs[node_id] = {"result": tuple(returned.get("result", ())), "ui": returned.get("ui", {})}
        else:
            outputs[node_id] = {"result": tuple(returned), "ui": {}}
        return outputs[node_id]

    for node_id, node in prompt.items():
        if node["class_type"] in run_types:
            run(node_id)
    return {node_id: out for node_id, out in outputs.items() if prompt[node_id]["class_type"] in run_types}
