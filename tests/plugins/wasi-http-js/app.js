// A standard wasi:http/proxy component in JavaScript: StarlingMonkey's fetch event, built by
// componentize-js with its `http` and `fetch-event` features. What it does is chosen by the last
// path segment:
//
// - `echo`: method, path, headers and how many requests this instance served, as JSON;
// - `stream`: the request body back as it arrives;
// - `call?url=http://x/y`: one `fetch`; answers its status and body, or the error it threw.

let served = 0;

async function handle(request) {
  served += 1;
  const url = new URL(request.url);
  const action = url.pathname.split("/").pop();
  if (action === "echo") {
    return Response.json({
      method: request.method,
      path: url.pathname + url.search,
      headers: [...request.headers.entries()],
      served,
    });
  }
  if (action === "stream") {
    return new Response(request.body, { headers: { "x-streamed": "yes" } });
  }
  if (action === "call") {
    try {
      const response = await fetch(url.searchParams.get("url"), {
        headers: { "x-from-guest": "js" },
      });
      return Response.json({ status: response.status, body: await response.text() });
    } catch (e) {
      return Response.json({ error: String(e) });
    }
  }
  return new Response(`no such action \`${action}\`\n`, { status: 404 });
}

addEventListener("fetch", (event) => event.respondWith(handle(event.request)));
