// Builds `app.js` into a standard wasi:http/proxy component with componentize-js, keeping its
// `http` (outgoing `fetch`) and `fetch-event` (incoming requests) features:
//
//   node build.mjs <node_modules> <out.wasm>
//
// `<node_modules>` holds the packages `examples/js/package-lock.json` pins (componentize-js and
// the WASI 0.2 WIT that jco ships); the test harness passes the ones `cargo xtask polyglot`
// installed under target/.

import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const [modules, out] = process.argv.slice(2);
if (!modules || !out) {
  console.error("usage: node build.mjs <node_modules> <out.wasm>");
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const entry = join(modules, "@bytecodealliance", "componentize-js", "src", "componentize.js");
const { componentize } = await import(pathToFileURL(entry).href);

// The world: wasi:http/proxy at the WASI version the engine's fetch event is built for
// (StarlingMonkey in componentize-js 0.23 implements wasi:http@0.2.10). jco ships the WASI 0.2.12
// packages; 0.2.x releases only add, so they are used under the engine's version number.
const ENGINE_WASI = "0.2.10";
const wasi = join(modules, "@bytecodealliance", "jco", "lib", "wit", "builtin", "0.2.12");
const wit = await mkdtemp(join(tmpdir(), "tessera-wasi-http-js-"));
try {
  for (const pkg of ["cli", "clocks", "filesystem", "http", "io", "random", "sockets"]) {
    const text = await readFile(join(wasi, `wasi-${pkg}`, "package.wit"), "utf8");
    await mkdir(join(wit, "deps", pkg), { recursive: true });
    await writeFile(
      join(wit, "deps", pkg, "package.wit"),
      text.replaceAll("@0.2.12", `@${ENGINE_WASI}`),
    );
  }
  await writeFile(
    join(wit, "world.wit"),
    `package tessera:wasi-http-test;\n\nworld proxy {\n  include wasi:http/proxy@${ENGINE_WASI};\n}\n`,
  );
  const { component } = await componentize({
    sourcePath: join(here, "app.js"),
    witPath: wit,
    worldName: "proxy",
  });
  await writeFile(out, component);
  console.error(`built ${out} (${component.length} bytes)`);
} finally {
  await rm(wit, { recursive: true, force: true });
}
