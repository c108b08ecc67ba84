// Bundles the session page and the recording player into dist/ (what ztproxy embeds).
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";

const out = new URL("./dist/", import.meta.url);
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  entryPoints: ["src/session.ts", "src/player.ts"],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: false,
  legalComments: "eof",
  outdir: "dist",
  logLevel: "warning",
});
for (const file of ["index.html", "player.html", "app.css"]) {
  await copyFile(new URL(`./static/${file}`, import.meta.url), new URL(file, out));
}
