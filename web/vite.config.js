// Builds the page into daemon/src/serve/page/, where comfyd includes each file by name
// (include_bytes!): so the names are fixed (no content hashes) and the output is the same bytes
// on every build; `scripts/page-check` rebuilds it and fails when the committed copy differs.
import { defineConfig } from "vite";
import { fileURLToPath } from "node:url";

export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "/",
  esbuild: { jsx: "automatic" },
  build: {
    outDir: fileURLToPath(new URL("../daemon/src/serve/page", import.meta.url)),
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    cssCodeSplit: false,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
    // React, RJSF and Ajv in one file, about 650 kB (150 kB gzipped); served from the binary.
    chunkSizeWarningLimit: 1024,
    rollupOptions: {
      // RJSF marks some modules "use client" (a React Server Components hint); a client-only
      // bundle has nothing to do with it.
      onwarn(w, warn) {
        if (w.code !== "MODULE_LEVEL_DIRECTIVE") warn(w);
      },
      output: {
        entryFileNames: "assets/app.js",
        chunkFileNames: "assets/[name].js",
        assetFileNames: (info) => (info.names?.some((n) => n.endsWith(".css")) ? "assets/app.css" : "assets/[name][extname]"),
      },
    },
  },
});
