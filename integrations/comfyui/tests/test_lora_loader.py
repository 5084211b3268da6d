"""EmProps_Lora_Loader against a real machine-cache (and behind it the real registry and Blob Storage).

Started by tools/dev-stack/tests/clients-comfyui.test.ts, which runs the stack,
uploads the LoRAs, puts files where ComfyUI keeps LoRAs and passes it all here:

  MACHINE_CACHE_URL, MACHINE_TOKEN, COMFYUI_LORA_DIR,
  EMPROPS_TEST_USER_LORA_DIR (where the machine-cache keeps user LoRAs: no ComfyUI folder),
  EMPROPS_TEST_USER_ID, EMPROPS_TEST_USER_LORA_ID,
  EMPROPS_TEST_OTHER_USER_ID, EMPROPS_TEST_OTHER_USER_LORA_ID,
  EMPROPS_TEST_SHARED_LORA (only in the shared container),
  EMPROPS_TEST_LOCAL_LORA (only at the top of models/loras),
  EMPROPS_TEST_EXTRA_LORA_DIR, EMPROPS_TEST_EXTRA_LORA (a second ComfyUI loras folder)
  EMPROPS_TEST_LARGE_SHARED_LORA, EMPROPS_TEST_UNCACHED_SHARED_LORA,
  EMPROPS_TEST_INTERRUPTED_SHARED_LORA (only in the shared container, fetched by one
  test each; the stack's blob traffic crosses a slow link)

ComfyUI itself is replaced by tests/comfyui_stand_in.py (folder_paths, the
loading functions, validation and execution of a prompt, the editor's
conversion of a saved workflow): it records which file is loaded, how, and
with what strengths.
"""

import json
import os
import sys
import unittest
from string import Template
from unittest import mock

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from comfyui_stand_in import Patched, PromptInvalid, comfyui, graph_to_prompt, node_classes, run_prompt  # noqa: E402
from emprops_user_lora import NODE_CLASS_MAPPINGS  # noqa: E402
from emprops_user_lora.job_context import job_context  # noqa: E402
from emprops_user_lora.lora_loader import LoraUnavailableError  # noqa: E402
from emprops_user_lora.machine_cache_client import MachineCacheError, ensure_lora  # noqa: E402
from emprops_user_lora.settings import load_settings  # noqa: E402

REQUIRED = [
    "MACHINE_CACHE_URL",
    "MACHINE_TOKEN",
    "COMFYUI_LORA_DIR",
    "EMPROPS_TEST_USER_LORA_DIR",
    "EMPROPS_TEST_USER_ID",
    "EMPROPS_TEST_USER_LORA_ID",
    "EMPROPS_TEST_OTHER_USER_ID",
    "EMPROPS_TEST_OTHER_USER_LORA_ID",
    "EMPROPS_TEST_SHARED_LORA",
    "EMPROPS_TEST_LOCAL_LORA",
    "EMPROPS_TEST_EXTRA_LORA_DIR",
    "EMPROPS_TEST_EXTRA_LORA",
    "EMPROPS_TEST_LARGE_SHARED_LORA",
    "EMPROPS_TEST_UNCACHED_SHARED_LORA",
    "EMPROPS_TEST_INTERRUPTED_SHARED_LORA",
]
WORKFLOWS = os.path.join(os.path.dirname(__file__), "workflows")
Loader = NODE_CLASS_MAPPINGS["EmProps_Lora_Loader"]


def setUpModule():
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        raise unittest.SkipTest(
            "run through `npx jest tools/dev-stack/tests/clients-comfyui.test.ts` (it starts the stack); missing "
            + ", ".join(missing)
        )


def env(name):
    return os.environ[name]


def workflow(file_name):
    """A workflow file with this run's LoRA names and ids filled in."""
    with open(os.path.join(WORKFLOWS, file_name), encoding="utf-8") as f:
        text = Template(f.read()).substitute(
            USER_ID=env("EMPROPS_TEST_USER_ID"),
            USER_LORA_ID=env("EMPROPS_TEST_USER_LORA_ID"),
            SHARED_LORA=env("EMPROPS_TEST_SHARED_LORA"),
            LOCAL_LORA=env("EMPROPS_TEST_LOCAL_LORA"),
            EXTRA_LORA=env("EMPROPS_TEST_EXTRA_LORA"),
        )
    return json.loads(text)


class ComfyTestCase(unittest.TestCase):
    def setUp(self):
        self.lora_dir = os.path.realpath(env("COMFYUI_LORA_DIR"))
        self.user_dir = os.path.join(os.path.realpath(env("EMPROPS_TEST_USER_LORA_DIR")), env("EMPROPS_TEST_USER_ID"))
        self.extra_dir = os.path.realpath(env("EMPROPS_TEST_EXTRA_LORA_DIR"))
        stand_in = comfyui([env("COMFYUI_LORA_DIR"), env("EMPROPS_TEST_EXTRA_LORA_DIR")])
        self.comfy = stand_in.__enter__()
        self.addCleanup(stand_in.__exit__, None, None, None)
        # Every change a test makes to os.environ is undone when this patch stops.
        patch = mock.patch.dict(os.environ, {"EMPROPS_LORA_ON_ERROR": "fail"})
        patch.start()
        self.addCleanup(patch.stop)
        for name in ("EMPROPS_LORA_LEGACY_ON_ERROR", "EMPROPS_JOB_USER_ID"):
            os.environ.pop(name, None)
        self.node = Loader()
        self.job = {
            "emprops_job": {
                "user_id": env("EMPROPS_TEST_USER_ID"),
                "job_id": "job-comfyui-test",
                "workflow_id": "wf-comfyui-test",
                "workflow_name": "ComfyUI node test",
            }
        }

    def load(self, source, identifier, extra_pnginfo="job", strengths=(0.75, 1.0)):
        return self.node.load_lora(
            "MODEL",
            "CLIP",
            lora_source=source,
            lora_identifier=identifier,
            strength_model=strengths[0],
            strength_clip=strengths[1],
            extra_pnginfo=self.job if extra_pnginfo == "job" else extra_pnginfo,
            unique_id="14",
        )

    def load_old(self, lora_name, strengths=(0.8, 0.6)):
        """As an API prompt written for the old node calls it: lora_name and the strengths, nothing else."""
        return self.node.load_lora(
            "MODEL", "CLIP", lora_name=lora_name, strength_model=strengths[0], strength_clip=strengths[1], unique_id="10"
        )

    def loaded_paths(self):
        return [path for path, _ in self.comfy.loaded]

    def assert_loaded_safely(self, path):
        self.assertIn((path, True), self.comfy.loaded, f"{path} was not loaded with safe_load=True")
        self.assertTrue(os.path.isabs(path) and os.path.isfile(path), path)


class InputsTest(ComfyTestCase):
    def test_inputs_are_the_specifications_and_the_old_nodes(self):
        spec = Loader.INPUT_TYPES()
        self.assertEqual(list(spec["required"]), ["model", "clip"])
        self.assertEqual(
            list(spec["optional"]),
            ["lora_source", "lora_identifier", "strength_model", "strength_clip", "lora_name", "lora_id"],
        )
        self.assertEqual(spec["optional"]["lora_source"][0], ["shared", "user"])
        # lora_name and lora_id take no widget, so the widgets (and saved widgets_values) keep the specification's order.
        self.assertTrue(spec["optional"]["lora_name"][1]["forceInput"])
        self.assertTrue(spec["optional"]["lora_id"][1]["forceInput"])


class UserLoraTest(ComfyTestCase):
    def test_user_lora_is_loaded_by_absolute_path_through_comfys_own_functions(self):
        model, clip = self.load("user", env("EMPROPS_TEST_USER_LORA_ID"))
        [path] = self.loaded_paths()
        self.assertEqual(os.path.dirname(path), self.user_dir)
        self.assert_loaded_safely(path)
        [applied] = self.comfy.applied
        self.assertEqual(applied, {"model": "MODEL", "clip": "CLIP", "file": path, "strengths": (0.75, 1.0)})
        self.assertEqual((model.base, model.lora_file, model.strength), ("MODEL", path, 0.75))
        self.assertEqual((clip.base, clip.lora_file, clip.strength), ("CLIP", path, 1.0))

    def test_the_specifications_lora_id_names_the_same_lora(self):
        lora_id = env("EMPROPS_TEST_USER_LORA_ID")
        self.node.load_lora("MODEL", "CLIP", lora_source="user", lora_id=lora_id, extra_pnginfo=self.job)
        [path] = self.loaded_paths()
        self.assertEqual(os.path.dirname(path), self.user_dir)

    def test_a_second_run_of_the_node_reuses_the_loaded_file(self):
        self.load("user", env("EMPROPS_TEST_USER_LORA_ID"))
        self.load("user", env("EMPROPS_TEST_USER_LORA_ID"), strengths=(0.5, 0.5))
        self.assertEqual(len(self.comfy.loaded), 1)
        self.assertEqual([a["strengths"] for a in self.comfy.applied], [(0.75, 1.0), (0.5, 0.5)])
        self.assertEqual(self.comfy.applied[0]["file"], self.comfy.applied[1]["file"])

    def test_another_users_lora_is_not_found_and_fails_the_node(self):
        with self.assertRaises(LoraUnavailableError) as caught:
            self.load("user", env("EMPROPS_TEST_OTHER_USER_LORA_ID"))
        self.assertIn("LORA_NOT_FOUND", str(caught.exception))
        self.assertIn("not found", str(caught.exception))
        self.assertEqual(self.comfy.loaded, [])

    def test_another_users_cached_path_as_lora_name_is_checked_as_that_users_lora(self):
        # ComfyUI lists cached user LoRAs by path; naming one resolves it by id, for the job's user only.
        other_id = env("EMPROPS_TEST_OTHER_USER_LORA_ID")
        other = f"users/{env('EMPROPS_TEST_OTHER_USER_ID')}/{other_id}-their_style.safetensors"
        with self.assertRaises(LoraUnavailableError) as caught:
            self.node.load_lora("MODEL", "CLIP", lora_name=other, extra_pnginfo=self.job)
        self.assertIn("LORA_NOT_FOUND", str(caught.exception))
        self.assertEqual(self.comfy.loaded, [])

    def test_continue_setting_goes_on_without_the_lora_and_says_so(self):
        os.environ["EMPROPS_LORA_ON_ERROR"] = "continue"
        with self.assertLogs("emprops.lora", level="WARNING") as logs:
            out = self.load("user", env("EMPROPS_TEST_OTHER_USER_LORA_ID"))
        self.assertEqual(out["result"], ("MODEL", "CLIP"))
        [warning] = out["ui"]["emprops_lora_warnings"]
        self.assertIn("LORA_NOT_FOUND", warning)
        self.assertIn("WITHOUT this LoRA (EMPROPS_LORA_ON_ERROR=continue)", warning)
        self.assertIn("LORA_NOT_FOUND", "\n".join(logs.output))
        self.assertEqual(self.comfy.messages, [("emprops.lora.warning", {"node": "14", "message": warning})])
        self.assertEqual(self.comfy.loaded, [])

    def test_job_user_from_the_environment_when_the_prompt_has_none(self):
        os.environ["EMPROPS_JOB_USER_ID"] = env("EMPROPS_TEST_USER_ID")
        self.load("user", env("EMPROPS_TEST_USER_LORA_ID"), extra_pnginfo=None)
        self.assert_loaded_safely(self.loaded_paths()[0])

    def test_no_job_user_is_a_clear_error(self):
        with self.assertRaises(LoraUnavailableError) as caught:
            self.load("user", env("EMPROPS_TEST_USER_LORA_ID"), extra_pnginfo={})
        self.assertIn("the job's user is unknown", str(caught.exception))

    def test_bad_identifier_reports_the_servers_reason(self):
        with self.assertRaises(LoraUnavailableError) as caught:
            self.load("user", "not-a-number")
        self.assertIn("INVALID_ID", str(caught.exception))

    def test_unreachable_machine_cache_fails_or_warns_by_the_setting(self):
        # Nothing listens on port 9 (discard); setUp's patch of os.environ undoes this.
        os.environ["MACHINE_CACHE_URL"] = "http://127.0.0.1:9"
        with self.assertRaises(LoraUnavailableError) as caught:
            self.load("user", env("EMPROPS_TEST_USER_LORA_ID"))
        self.assertIn("not reachable", str(caught.exception))
        os.environ["EMPROPS_LORA_ON_ERROR"] = "continue"
        with self.assertLogs("emprops.lora", level="WARNING"):
            out = self.load("user", env("EMPROPS_TEST_USER_LORA_ID"))
        self.assertEqual(out["result"], ("MODEL", "CLIP"))
        self.assertIn("not reachable", out["ui"]["emprops_lora_warnings"][0])

    def test_zero_strengths_load_nothing_as_comfys_lora_loader(self):
        self.assertEqual(self.load("user", env("EMPROPS_TEST_USER_LORA_ID"), strengths=(0, 0)), ("MODEL", "CLIP"))
        self.assertEqual(self.comfy.loaded, [])


class SharedLoraTest(ComfyTestCase):
    def test_shared_lora_is_fetched_from_shared_storage_and_needs_no_job_user(self):
        name = env("EMPROPS_TEST_SHARED_LORA")
        self.load("shared", name, extra_pnginfo=None)
        self.assertEqual(self.loaded_paths(), [os.path.join(self.lora_dir, "shared", name)])
        self.assert_loaded_safely(self.loaded_paths()[0])

    def test_shared_lora_at_the_top_of_models_loras_is_used_where_it_is(self):
        name = env("EMPROPS_TEST_LOCAL_LORA")
        self.load("shared", name, extra_pnginfo=None)
        self.assertEqual(self.loaded_paths(), [os.path.join(self.lora_dir, name)])

    def test_missing_shared_lora_fails_with_the_servers_message(self):
        with self.assertRaises(LoraUnavailableError) as caught:
            self.load("shared", "no-such-lora.safetensors")
        self.assertIn("no-such-lora.safetensors", str(caught.exception))
        self.assertIn("LORA_NOT_FOUND", str(caught.exception))


class DownloadProgressTest(ComfyTestCase):
    def test_a_download_moves_comfys_progress_bar_up_to_the_files_size(self):
        name = env("EMPROPS_TEST_LARGE_SHARED_LORA")
        self.load("shared", name, extra_pnginfo=None)
        [path] = self.loaded_paths()
        size = os.path.getsize(path)
        self.assertEqual(self.comfy.bars, 1)
        self.assertEqual({p["max"] for p in self.comfy.progress}, {size})
        values = [p["value"] for p in self.comfy.progress]
        self.assertEqual(values, sorted(values))
        self.assertEqual(values[-1], size)
        # Over the slow link the bar moved while bytes arrived, not only at the start and the end.
        self.assertTrue(any(0 < v < size for v in values), values)
        # Cached now: loading it again shows no bar.
        self.load("shared", name, extra_pnginfo=None, strengths=(0.5, 0.5))
        self.assertEqual(self.comfy.bars, 1)

    def test_a_comfyui_without_progress_bar_still_loads_the_lora(self):
        stand_in = comfyui([env("COMFYUI_LORA_DIR"), env("EMPROPS_TEST_EXTRA_LORA_DIR")], progress_bar=False)
        comfy = stand_in.__enter__()
        self.addCleanup(stand_in.__exit__, None, None, None)
        name = env("EMPROPS_TEST_UNCACHED_SHARED_LORA")
        Loader().load_lora("MODEL", "CLIP", lora_source="shared", lora_identifier=name)
        self.assertEqual([path for path, _ in comfy.loaded], [os.path.join(self.lora_dir, "shared", name)])
        self.assertEqual((comfy.bars, comfy.progress), (0, []))

    def test_cancelling_the_prompt_while_the_lora_downloads_stops_the_node_and_the_download_goes_on(self):
        name = env("EMPROPS_TEST_INTERRUPTED_SHARED_LORA")
        management = sys.modules["comfy.model_management"]
        # The user presses Cancel: the bar's next update raises ComfyUI's interrupt, which the node lets through,
        # even for a workflow written for the old node (which goes on without a LoRA that cannot be had).
        management.interrupt_current_processing(True)
        with self.assertRaises(management.InterruptProcessingException):
            self.load_old(name)
        self.assertEqual((self.comfy.loaded, self.comfy.messages), ([], []))
        # The machine-cache went on downloading: the next run waits for that download (or finds it done).
        self.load_old(name)
        self.assertEqual(self.loaded_paths(), [os.path.join(self.lora_dir, "shared", name)])
        self.assert_loaded_safely(self.loaded_paths()[0])

    def test_the_streamed_call_reports_a_missing_lora_with_the_servers_reason(self):
        seen = []
        job = job_context(self.job)
        with self.assertRaises(MachineCacheError) as caught:
            ensure_lora(load_settings(), job, "user", "987654321", on_progress=seen.append)
        self.assertEqual((caught.exception.code, caught.exception.reason), ("not_found", "LORA_NOT_FOUND"))
        self.assertEqual([p.phase for p in seen], ["resolving", "error"])


class OldNodeInputsTest(ComfyTestCase):
    """lora_name, strength_model, strength_clip: what workflows written for the old EmProps_Lora_Loader send."""

    def test_a_lora_at_the_top_of_models_loras_is_loaded_from_there(self):
        name = env("EMPROPS_TEST_LOCAL_LORA")
        model, clip = self.load_old(name)
        path = os.path.join(self.lora_dir, name)
        self.assertEqual(self.loaded_paths(), [path])
        self.assert_loaded_safely(path)
        self.assertEqual((model.strength, clip.strength), (0.8, 0.6))

    def test_a_lora_in_another_comfyui_loras_folder_is_loaded_from_there(self):
        self.load_old(env("EMPROPS_TEST_EXTRA_LORA"))
        self.assertEqual(self.loaded_paths(), [os.path.join(self.extra_dir, env("EMPROPS_TEST_EXTRA_LORA"))])

    def test_a_lora_on_no_folder_is_fetched_from_shared_storage_without_a_job_user(self):
        name = env("EMPROPS_TEST_SHARED_LORA")
        self.load_old(name)
        self.assertEqual(self.loaded_paths(), [os.path.join(self.lora_dir, "shared", name)])

    def test_a_missing_lora_goes_on_without_it_as_the_old_node_did_but_says_so(self):
        # EMPROPS_LORA_ON_ERROR=fail (setUp) is for the node's own inputs; old workflows keep their fallback.
        with self.assertLogs("emprops.lora", level="WARNING"):
            out = self.load_old("never_uploaded.safetensors")
        self.assertEqual(out["result"], ("MODEL", "CLIP"))
        [warning] = out["ui"]["emprops_lora_warnings"]
        self.assertIn("never_uploaded.safetensors", warning)
        self.assertIn("LORA_NOT_FOUND", warning)
        self.assertIn("(EMPROPS_LORA_LEGACY_ON_ERROR=continue)", warning)
        self.assertEqual(self.comfy.messages[0][0], "emprops.lora.warning")

    def test_the_legacy_setting_can_make_a_missing_lora_fail(self):
        os.environ["EMPROPS_LORA_LEGACY_ON_ERROR"] = "fail"
        with self.assertRaises(LoraUnavailableError) as caught:
            self.load_old("never_uploaded.safetensors")
        self.assertIn("LORA_NOT_FOUND", str(caught.exception))

    def test_an_empty_lora_name_is_no_lora_as_before(self):
        self.assertEqual(self.load_old(""), ("MODEL", "CLIP"))
        self.assertEqual((self.comfy.loaded, self.comfy.messages), ([], []))


class WorkflowTest(ComfyTestCase):
    """Whole EmProps-style workflows, API and UI format, through ComfyUI's validation and execution."""

    classes = None

    def setUp(self):
        super().setUp()
        self.classes = node_classes(EmProps_Lora_Loader=Loader)

    def run_api(self, doc):
        return run_prompt(doc["prompt"], self.classes, doc.get("extra_data"))

    def test_an_api_prompt_written_for_the_old_node_runs_unchanged(self):
        out = self.run_api(workflow("old-node-api.json"))
        shared = os.path.join(self.lora_dir, "shared", env("EMPROPS_TEST_SHARED_LORA"))
        local = os.path.join(self.lora_dir, env("EMPROPS_TEST_LOCAL_LORA"))
        self.assertEqual(self.loaded_paths(), [shared, local])
        for path in (shared, local):
            self.assert_loaded_safely(path)
        model, clip = out["11"]["result"]
        # Chained: the second LoRA patches what the first returned.
        self.assertEqual(repr(model), repr(Patched(Patched("MODEL:sd_xl_base_1.0.safetensors", shared, 0.8), local, 1.0)))
        self.assertEqual(repr(clip), repr(Patched(Patched("CLIP:sd_xl_base_1.0.safetensors", shared, 0.6), local, 1.0)))

    def test_a_ui_workflow_saved_with_the_old_node_keeps_its_names_and_strengths(self):
        prompt = graph_to_prompt(workflow("old-node-ui.json"), self.classes)
        # What ComfyUI's editor queues: the old widget values, one place off.
        self.assertEqual(
            {k: v for k, v in prompt["10"]["inputs"].items() if not isinstance(v, list)},
            {
                "lora_source": env("EMPROPS_TEST_EXTRA_LORA"),
                "lora_identifier": 0.8,
                "strength_model": 0.6,
                "strength_clip": 1.0,
            },
        )
        out = run_prompt(prompt, self.classes)
        extra = os.path.join(self.extra_dir, env("EMPROPS_TEST_EXTRA_LORA"))
        shared = os.path.join(self.lora_dir, "shared", env("EMPROPS_TEST_SHARED_LORA"))
        self.assertEqual(self.loaded_paths(), [extra, shared])
        self.assertEqual([a["strengths"] for a in self.comfy.applied], [(0.8, 0.6), (0.9, 0.7)])
        self.assertEqual(out["11"]["ui"], {})

    def test_without_its_own_validation_that_workflow_would_be_refused_before_running(self):
        # The same node without VALIDATE_INPUTS: ComfyUI checks lora_source against its choices and refuses.
        members = {k: v for k, v in vars(Loader).items() if k == "__init__" or not k.startswith("__")}
        del members["VALIDATE_INPUTS"]
        classes = node_classes(EmProps_Lora_Loader=type("WithoutValidateInputs", (), members))
        with self.assertRaises(PromptInvalid) as caught:
            run_prompt(graph_to_prompt(workflow("old-node-ui.json"), classes), classes)
        self.assertIn("value_not_in_list", str(caught.exception))
        self.assertEqual(self.comfy.loaded, [])

    def test_an_api_prompt_with_the_specifications_inputs_loads_the_users_and_the_shared_lora(self):
        out = self.run_api(workflow("user-lora-api.json"))
        user_path, shared = self.loaded_paths()
        self.assertEqual(os.path.dirname(user_path), self.user_dir)
        self.assertEqual(shared, os.path.join(self.lora_dir, "shared", env("EMPROPS_TEST_SHARED_LORA")))
        self.assertEqual([a["strengths"] for a in self.comfy.applied], [(0.75, 1.0), (0.5, 0.5)])
        self.assertEqual(out["15"]["result"][0].base.lora_file, user_path)

    def test_a_ui_workflow_with_the_specifications_inputs_maps_its_widgets(self):
        prompt = graph_to_prompt(workflow("user-lora-ui.json"), self.classes)
        out = run_prompt(prompt, self.classes, {"extra_pnginfo": self.job})
        user_path, local = self.loaded_paths()
        self.assertEqual(os.path.dirname(user_path), self.user_dir)
        self.assertEqual(local, os.path.join(self.lora_dir, env("EMPROPS_TEST_LOCAL_LORA")))
        self.assertEqual([a["strengths"] for a in self.comfy.applied], [(0.75, 1.0), (0.5, 0.5)])
        self.assertEqual(set(out), {"14", "15"})

    def test_a_user_lora_workflow_without_the_job_fails_as_configured(self):
        doc = workflow("user-lora-api.json")
        with self.assertRaises(LoraUnavailableError) as caught:
            run_prompt(doc["prompt"], self.classes, {})
        self.assertIn("the job's user is unknown", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
