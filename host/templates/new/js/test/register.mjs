// `node --import ./test/register.mjs`: the plugin's `tessera:gateway/...` imports resolve to
// test/mock-host.mjs, which stands in for the gateway while the tests run in Node.

import { register } from "node:module";

register("./hooks.mjs", import.meta.url);
