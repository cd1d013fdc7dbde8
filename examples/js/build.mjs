// Builds one JavaScript plugin into a component with componentize-js:
//
//   node build.mjs <wit-dir> <source.js> <world> <out.wasm>
//
// e.g. `node build.mjs ../../wit src/order-details.js handler order-details.wasm` after
// `npm ci` here. `cargo xtask polyglot` runs it for every plugin, with the packages installed
// under target/ and named by `TESSERA_JS_MODULES` (a `node_modules` directory; default: the one
// beside this file).
//
// The gateway links its own interfaces and the WASI ones an engine needs for stdio, clocks and
// random numbers; the engine's built-in `fetch` would import wasi:http, so it is left out
// (plugins call upstreams through `tessera:gateway/http-client`).

import { writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const [witDir, source, world, out] = process.argv.slice(2);
if (!witDir || !source || !world || !out) {
  console.error("usage: node build.mjs <wit-dir> <source.js> <world> <out.wasm>");
  process.exit(2);
}

const modules =
  process.env.TESSERA_JS_MODULES ?? join(dirname(fileURLToPath(import.meta.url)), "node_modules");
const entry = join(modules, "@bytecodealliance", "componentize-js", "src", "componentize.js");
const { componentize } = await import(pathToFileURL(entry).href);

const { component } = await componentize({
  sourcePath: resolve(source),
  witPath: resolve(witDir),
  worldName: world,
  disableFeatures: ["http", "fetch-event"],
});
await writeFile(out, component);
console.error(`built ${out} (world ${world}, ${component.length} bytes)`);
