// Builds the page into daemon/src/serve/page/, where comfyd includes each file by name
// (include_bytes!): so the names are fixed (no content hashes) and the output is the same bytes
// on every build; `scripts/page-check` rebuilds it and fails when the committed copy differs.
import { defineConfig } from "vite";
import { fileURLToPath } from "node:url";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

// The bundle drops the packages' licence comments; their licences go beside it instead, in
// assets/licenses.txt (one section per npm package in the bundle, sorted by name).
function licenses() {
  return {
    name: "licenses",
    generateBundle(_, bundle) {
      const pkgs = new Map();
      for (const chunk of Object.values(bundle)) {
        for (const id of chunk.moduleIds ?? []) {
          const dir = packageDir(id);
          if (dir && !pkgs.has(dir)) pkgs.set(dir, JSON.parse(readFileSync(join(dir, "package.json"), "utf8")));
        }
      }
      const sections = [...pkgs.entries()]
        .map(([dir, p]) => {
          const file = readdirSync(dir).sort().find((f) => /^(licen[cs]e|copying)(\.|$)/i.test(f));
          const text = file ? readFileSync(join(dir, file), "utf8").trim() : `(${p.license}; no licence file in the package)`;
          return `${p.name} ${p.version} (${p.license})\n\n${text}\n`;
        })
        .sort();
      this.emitFile({
        type: "asset",
        fileName: "assets/licenses.txt",
        source: `Packages bundled into app.js, with their licences.\n\n${sections.join("\n" + "=".repeat(72) + "\n\n")}`,
      });
    },
  };
}

function packageDir(moduleId) {
  // Rollup's helper modules start with a NUL and may carry a query (`?commonjs-exports`).
  const id = moduleId.replace(/^\0/, "").replace(/\?.*$/, "");
  const i = id.lastIndexOf("/node_modules/");
  if (i < 0) return null;
  const rest = id.slice(i + "/node_modules/".length).split("/");
  const dir = id.slice(0, i) + "/node_modules/" + (rest[0].startsWith("@") ? rest.slice(0, 2) : rest.slice(0, 1)).join("/");
  return existsSync(join(dir, "package.json")) ? dir : null;
}

export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "/",
  plugins: [licenses()],
  esbuild: { jsx: "automatic" },
  build: {
    outDir: fileURLToPath(new URL("../daemon/src/serve/page", import.meta.url)),
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    cssCodeSplit: false,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
    // React, RJSF and Ajv in one file, about 660 kB (210 kB gzipped); served from the binary.
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
