// Module resolution hooks (see register.mjs): every `tessera:gateway/<interface>@<version>`
// import is served by mock-host.mjs.

const MOCK_HOST = new URL("./mock-host.mjs", import.meta.url).href;

export async function resolve(specifier, context, nextResolve) {
  if (specifier.startsWith("tessera:gateway/")) {
    return { url: MOCK_HOST, shortCircuit: true };
  }
  return nextResolve(specifier, context);
}
