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
// The same module instance componentize.js imports: its bindings pass
// through `fasterStrings` on their way into the component.
const { splicer } = await import(pathToFileURL(join(pkgDir, "lib", "spidermonkey-embedding-splicer.js")).href);
const spliceBindings = splicer.spliceBindings;
splicer.spliceBindings = (...args) => {
  const spliced = spliceBindings(...args);
  return { ...spliced, jsBindings: fasterStrings(spliced.jsBindings) };
};

// The generated bindings pass every string to the host (each output's data,
// topic and type, kv keys, log lines) through `_utf8AllocateAndEncode`, which
// counts the string's UTF-8 bytes in a JavaScript loop over its characters:
// in the engine's interpreter about 1.5 µs a character, 0.6 ms for a 400-byte
// payload, most of a call. This version has the engine's native TextEncoder
// do the counting and the encoding, and still allocates exactly once with the
// final length (a lone surrogate becomes U+FFFD, three bytes, in both).
const ENCODE = /^function _utf8AllocateAndEncode\(s, realloc, memory\) \{\n[\s\S]*?\n\}\n/m;
const FAST_ENCODE = `function _utf8AllocateAndEncode(s, realloc, memory) {
  if (typeof s !== 'string') {
    throw new TypeError('expected a string, received [' + typeof s + ']');
  }
  if (s.length === 0) { return { ptr: 1, len: 0 }; }
  const bytes = TEXT_ENCODER_UTF8.encode(s);
  const len = bytes.length;
  const ptr = realloc(0, 0, 1, len);
  new Uint8Array(memory.buffer, ptr, len).set(bytes);
  return { ptr, len };
}
`;
function fasterStrings(bindings) {
  if (!ENCODE.test(bindings)) {
    console.error("componentize: warning: the bindings' string encoder was not found; strings are encoded as generated (slower)");
    return bindings;
  }
  return bindings.replace(ENCODE, FAST_ENCODE);
}
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
