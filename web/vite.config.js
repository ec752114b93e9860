import fs from "node:fs";
import path from "node:path";
import { defineConfig } from "vite";

const outDir = path.resolve(import.meta.dirname, "../src/tandem/webapp");

// The service worker caches these at install, so the page (and its WASM) opens with the server
// stopped once it was opened online.
function precacheList() {
  return {
    name: "tandem-precache",
    writeBundle() {
      const files = [];
      const walk = (dir) => {
        for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
          const p = path.join(dir, e.name);
          if (e.isDirectory()) walk(p);
          else files.push(path.relative(outDir, p).split(path.sep).join("/"));
        }
      };
      walk(outDir);
      const list = ["./", ...files.filter((f) => !["sw.js", "precache.json"].includes(f) && !f.endsWith(".map"))];
      fs.writeFileSync(path.join(outDir, "precache.json"), JSON.stringify(list.sort()));
    },
  };
}

export default defineConfig({
  base: "./",
  build: { outDir, emptyOutDir: true, target: "es2022", chunkSizeWarningLimit: 2000 },
  plugins: [precacheList()],
});
