// Turns one ES module into a switchyard plugin component with ComponentizeJS.
// `switchyard plugin build` runs it (it ships inside the switchyard binary);
// it is here so the repository's JavaScript plugins can be built the same way.
//
//   node componentize.mjs PACKAGE_DIR ENTRY.js WIT_DIR OUT.wasm
//
// PACKAGE_DIR is the installed `@bytecodealliance/componentize-js` package.
// The `http` and `fetch-event` features are disabled because they make the
// component import `wasi:http`, which the router does not provide. AOT
// compilation (weval) is left off: it needs a download at build time.
import { writeFile, rename } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [pkgDir, sourcePath, witPath, out] = process.argv.slice(2);
if (!out) {
  console.error("usage: node componentize.mjs PACKAGE_DIR ENTRY.js WIT_DIR OUT.wasm");
  process.exit(2);
}
const { componentize } = await import(pathToFileURL(join(pkgDir, "src", "componentize.js")).href);
try {
  const { component } = await componentize({
    sourcePath,
    witPath,
    worldName: "processor",
    disableFeatures: ["http", "fetch-event"],
  });
  // Write aside and rename, so a router watching `out` never sees half a file.
  await writeFile(out + ".tmp", component);
  await rename(out + ".tmp", out);
} catch (e) {
  console.error(`componentize failed for ${sourcePath}: ${e && e.message ? e.message : e}`);
  process.exit(1);
}
