import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const source = (lib: string) => fileURLToPath(new URL(`../../libs/${lib}/src/index.ts`, import.meta.url));

// The shared libraries are bundled from their TypeScript source (ES modules), so only what is used ships.
export default defineConfig({
  base: "./",
  resolve: {
    alias: { "@emprops/contracts": source("contracts"), "@emprops/upload-client": source("upload-client") },
  },
  build: { outDir: "dist", emptyOutDir: true, target: "es2022", sourcemap: true },
  server: { host: "127.0.0.1", port: 5173 },
  preview: { host: "127.0.0.1", port: 5173 },
});
