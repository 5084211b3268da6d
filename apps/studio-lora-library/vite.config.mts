import { builtinModules } from "node:module";
import { fileURLToPath } from "node:url";
import { defineConfig, type Plugin } from "vite";

const source = (lib: string, file = "index") =>
  fileURLToPath(new URL(`../../libs/${lib}/src/${file}.ts`, import.meta.url));

/** The page runs in a browser: an import of a Node built-in anywhere in the bundle fails the build. */
const noNodeBuiltins: Plugin = {
  name: "no-node-builtins",
  enforce: "pre",
  resolveId(id, importer) {
    if (id.startsWith("node:") || builtinModules.includes(id)) {
      this.error(`${importer ?? "the page"} imports the Node built-in "${id}", which a browser does not have`);
    }
    return null;
  },
};

// The shared libraries are bundled from their TypeScript source (ES modules), so only what is used ships;
// lora-formats only through its browser-safe head check.
export default defineConfig({
  base: "./",
  plugins: [noNodeBuiltins],
  resolve: {
    alias: {
      "@emprops/contracts": source("contracts"),
      "@emprops/upload-client": source("upload-client"),
      "@emprops/lora-formats/head": source("lora-formats", "head"),
    },
  },
  build: { outDir: "dist", emptyOutDir: true, target: "es2022", sourcemap: true },
  server: { host: "127.0.0.1", port: 5173 },
  preview: { host: "127.0.0.1", port: 5173 },
});
