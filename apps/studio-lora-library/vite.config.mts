import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// The contracts are bundled from their TypeScript source (ES modules), so only the messages used ship.
export default defineConfig({
  base: "./",
  resolve: {
    alias: { "@emprops/contracts": fileURLToPath(new URL("../../libs/contracts/src/index.ts", import.meta.url)) },
  },
  build: { outDir: "dist", emptyOutDir: true, target: "es2022", sourcemap: true },
  server: { host: "127.0.0.1", port: 5173 },
  preview: { host: "127.0.0.1", port: 5173 },
});
