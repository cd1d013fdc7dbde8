// Builds the plugin into a WebAssembly component with componentize-js (pinned in
// package-lock.json): `npm run build` writes dist/{{name}}.wasm.
//
// The world is `checked-{{kind}}` of the gateway's WIT (wit/gateway.wit): the plugin exports
// `request-{{kind}}`, and `config-check`, which the gateway calls to check each route's config
// when it loads the plugin or the config. The engine's built-in `fetch` would import wasi:http,
// which the gateway does not give plugins, so it is left out: calls to upstreams go through
// `tessera:gateway/http-client`.

import { mkdir, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { componentize } from "@bytecodealliance/componentize-js";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));

const { component } = await componentize({
  sourcePath: here("src/plugin.js"),
  witPath: here("wit"),
  worldName: "checked-{{kind}}",
  disableFeatures: ["http", "fetch-event"],
});
await mkdir(here("dist"), { recursive: true });
await writeFile(here("dist/{{name}}.wasm"), component);
console.log(`built dist/{{name}}.wasm (${component.length} bytes)`);
