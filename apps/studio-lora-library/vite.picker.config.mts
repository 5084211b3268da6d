import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const lib = (path: string) => fileURLToPath(new URL(`../../libs/${path}`, import.meta.url));

// The LoRA picker as one self-contained ES module (dist/picker/emprops-lora-picker.js) a workflow editor loads
// with a <script type="module">: the custom element, Connect-Web and the generated contracts it uses, nothing else.
export default defineConfig({
  // The page's public files (config.json, the demo) belong to the page's build, not to the bundle.
  publicDir: false,
  resolve: {
    alias: {
      "@emprops/contracts": lib("contracts/src/index.ts"),
      "@emprops/lora-formats/lora-metadata": lib("lora-formats/src/lora-metadata.ts"),
    },
  },
  build: {
    outDir: "dist/picker",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: true,
    lib: {
      entry: fileURLToPath(new URL("src/picker/index.ts", import.meta.url)),
      formats: ["es"],
      fileName: () => "emprops-lora-picker.js",
    },
    // Library mode keeps whitespace unless the output itself is minified.
    rolldownOptions: { output: { minify: true } },
  },
});
