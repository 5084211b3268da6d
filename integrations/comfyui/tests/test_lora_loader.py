"""EmProps_Lora_Loader against a real machine-cache (and behind it the real registry and Blob Storage).

Started by tools/dev-stack/tests/clients-comfyui.test.ts, which runs the stack,
uploads the LoRAs and passes their ids here:

  MACHINE_CACHE_URL, MACHINE_TOKEN, COMFYUI_LORA_DIR,
  EMPROPS_TEST_USER_ID, EMPROPS_TEST_USER_LORA_ID,
  EMPROPS_TEST_OTHER_USER_LORA_ID, EMPROPS_TEST_SHARED_LORA

ComfyUI itself is replaced only at the LoraLoader call (the `nodes` module).
"""

import os
import sys
import types
import unittest
from unittest import mock

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from emprops_user_lora import NODE_CLASS_MAPPINGS  # noqa: E402
from emprops_user_lora.lora_loader import LoraUnavailableError  # noqa: E402

REQUIRED = [
    "MACHINE_CACHE_URL",
    "MACHINE_TOKEN",
    "COMFYUI_LORA_DIR",
    "EMPROPS_TEST_USER_ID",
    "EMPROPS_TEST_USER_LORA_ID",
    "EMPROPS_TEST_OTHER_USER_LORA_ID",
    "EMPROPS_TEST_SHARED_LORA",
]


def setUpModule():
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        raise unittest.SkipTest(
            "run through `npx jest tools/dev-stack/tests/clients-comfyui.test.ts` (it starts the stack); missing "
            + ", ".join(missing)
        )


class StubLoraLoader:
    """Stands in for ComfyUI's nodes.LoraLoader, checking the file the way ComfyUI finds it."""

    calls = []

    def load_lora(self, model, clip, lora_name, strength_model, strength_clip):
        full = os.path.join(os.environ["COMFYUI_LORA_DIR"], *lora_name.split("/"))
        StubLoraLoader.calls.append(
            {"lora_name": lora_name, "exists": os.path.isfile(full), "strengths": (strength_model, strength_clip)}
        )
        return (("patched", model, lora_name), ("patched", clip, lora_name))


class LoraLoaderTest(unittest.TestCase):
    def setUp(self):
        StubLoraLoader.calls = []
        self.nodes = mock.patch.dict(sys.modules, {"nodes": types.SimpleNamespace(LoraLoader=StubLoraLoader)})
        self.nodes.start()
        self.addCleanup(self.nodes.stop)
        # Every change a test makes to os.environ is undone when this patch stops.
        self.env = mock.patch.dict(os.environ, {"EMPROPS_LORA_ON_ERROR": "fail"})
        self.env.start()
        self.addCleanup(self.env.stop)
        self.node = NODE_CLASS_MAPPINGS["EmProps_Lora_Loader"]()
        self.job = {
            "emprops_job": {
                "user_id": os.environ["EMPROPS_TEST_USER_ID"],
                "job_id": "job-comfyui-test",
                "workflow_id": "wf-comfyui-test",
                "workflow_name": "ComfyUI node test",
            }
        }

    def load(self, source, identifier, extra_pnginfo="job"):
        return self.node.load_lora(
            "MODEL",
            "CLIP",
            source,
            identifier,
            0.75,
            1.0,
            extra_pnginfo=self.job if extra_pnginfo == "job" else extra_pnginfo,
            unique_id="14",
        )

    def test_inputs_are_the_specifications(self):
        required = NODE_CLASS_MAPPINGS["EmProps_Lora_Loader"].INPUT_TYPES()["required"]
        self.assertEqual(
            list(required), ["model", "clip", "lora_source", "lora_identifier", "strength_model", "strength_clip"]
        )
        self.assertEqual(required["lora_source"][0], ["shared", "user"])

    def test_user_lora_resolves_to_an_existing_file_relative_to_models_loras(self):
        model, clip = self.load("user", os.environ["EMPROPS_TEST_USER_LORA_ID"])
        self.assertEqual(len(StubLoraLoader.calls), 1)
        call = StubLoraLoader.calls[0]
        user = os.environ["EMPROPS_TEST_USER_ID"]
        self.assertTrue(call["lora_name"].startswith(f"users/{user}/"), call["lora_name"])
        self.assertNotEqual(call["lora_name"], os.path.basename(call["lora_name"]))
        self.assertTrue(call["exists"], f"{call['lora_name']} is not under COMFYUI_LORA_DIR")
        self.assertEqual(call["strengths"], (0.75, 1.0))
        self.assertEqual(model, ("patched", "MODEL", call["lora_name"]))
        self.assertEqual(clip, ("patched", "CLIP", call["lora_name"]))

    def test_user_lora_a_second_time_is_the_same_cached_file(self):
        self.load("user", os.environ["EMPROPS_TEST_USER_LORA_ID"])
        self.load("user", os.environ["EMPROPS_TEST_USER_LORA_ID"])
        self.assertEqual(StubLoraLoader.calls[0]["lora_name"], StubLoraLoader.calls[1]["lora_name"])
        self.assertTrue(StubLoraLoader.calls[1]["exists"])

    def test_shared_lora_resolves_to_an_existing_file_under_shared(self):
        name = os.environ["EMPROPS_TEST_SHARED_LORA"]
        self.load("shared", name)
        call = StubLoraLoader.calls[0]
        self.assertEqual(call["lora_name"], f"shared/{name}")
        self.assertTrue(call["exists"])

    def test_another_users_lora_is_not_found_and_fails_the_node(self):
        with self.assertRaises(LoraUnavailableError) as caught:
            self.load("user", os.environ["EMPROPS_TEST_OTHER_USER_LORA_ID"])
        self.assertIn("LORA_NOT_FOUND", str(caught.exception))
        self.assertIn("not found", str(caught.exception))
        self.assertEqual(StubLoraLoader.calls, [])

    def test_continue_setting_goes_on_without_the_lora_and_says_so(self):
        os.environ["EMPROPS_LORA_ON_ERROR"] = "continue"
        with self.assertLogs("emprops.lora", level="WARNING") as logs:
            out = self.load("user", os.environ["EMPROPS_TEST_OTHER_USER_LORA_ID"])
        self.assertEqual(out["result"], ("MODEL", "CLIP"))
        [warning] = out["ui"]["emprops_lora_warnings"]
        self.assertIn("LORA_NOT_FOUND", warning)
        self.assertIn("WITHOUT this LoRA", warning)
        self.assertIn("LORA_NOT_FOUND", "\n".join(logs.output))
        self.assertEqual(StubLoraLoader.calls, [])

    def test_missing_shared_lora_fails_with_the_servers_message(self):
        with self.assertRaises(LoraUnavailableError) as caught:
            self.load("shared", "no-such-lora.safetensors")
        self.assertIn("no-such-lora.safetensors", str(caught.exception))
        self.assertIn("LORA_NOT_FOUND", str(caught.exception))

    def test_job_user_from_the_environment_when_the_prompt_has_none(self):
        os.environ["EMPROPS_JOB_USER_ID"] = os.environ["EMPROPS_TEST_USER_ID"]
        self.load("user", os.environ["EMPROPS_TEST_USER_LORA_ID"], extra_pnginfo=None)
        self.assertTrue(StubLoraLoader.calls[0]["exists"])

    def test_no_job_user_is_a_clear_error(self):
        os.environ.pop("EMPROPS_JOB_USER_ID", None)
        with self.assertRaises(LoraUnavailableError) as caught:
            self.load("user", os.environ["EMPROPS_TEST_USER_LORA_ID"], extra_pnginfo={})
        self.assertIn("the job's user is unknown", str(caught.exception))

    def test_bad_identifier_reports_the_servers_reason(self):
        with self.assertRaises(LoraUnavailableError) as caught:
            self.load("user", "not-a-number")
        self.assertIn("INVALID_ID", str(caught.exception))

    def test_unreachable_machine_cache_fails_or_warns_by_the_setting(self):
        # Nothing listens on port 9 (discard); setUp's patch of os.environ undoes this.
        os.environ["MACHINE_CACHE_URL"] = "http://127.0.0.1:9"
        with self.assertRaises(LoraUnavailableError) as caught:
            self.load("user", os.environ["EMPROPS_TEST_USER_LORA_ID"])
        self.assertIn("not reachable", str(caught.exception))
        os.environ["EMPROPS_LORA_ON_ERROR"] = "continue"
        with self.assertLogs("emprops.lora", level="WARNING"):
            out = self.load("user", os.environ["EMPROPS_TEST_USER_LORA_ID"])
        self.assertEqual(out["result"], ("MODEL", "CLIP"))
        self.assertIn("not reachable", out["ui"]["emprops_lora_warnings"][0])


if __name__ == "__main__":
    unittest.main()
