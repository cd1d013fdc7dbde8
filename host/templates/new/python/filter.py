"""{{name}}: a Tessera filter plugin in Python. Requests must carry a header (`x-client-id`
unless the config names another); without it the gateway answers 400 and the route's target
never sees the request. Responses on their way back get `x-checked-by: {{name}}`.

    [[routes]]
    path = "/api/{*rest}"
    upstream = "api"

    [[routes.filters]]
    plugin = "{{name}}"
    config = { header = "x-client-id" }

The gateway's interfaces are the `wit_world` bindings componentize-py generates from
wit/gateway.wit; header names are lower-case, header values and bodies `bytes`. The gateway
creates a fresh instance for every request; it serves both `on_request` and `on_response` of
that request.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.request_filter import RequestAction_Continue, RequestAction_Respond
from wit_world.imports import config, context, types

# RFC 9110 token characters: what a header name may be made of.
TOKEN = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class RequestFilter(exports.RequestFilter):
    def on_request(self, request: types.Request) -> exports.request_filter.RequestAction:
        # `ConfigCheck` below has passed this config before the gateway serves with it.
        name = read_config(config.get())["header"]
        value = next((h.value for h in request.headers if h.name == name), None)
        if value is None or not value.strip():
            # The route's target is not called; the client gets this answer.
            return RequestAction_Respond(error_response(400, f"missing header {name}"))
        return RequestAction_Continue(request)

    def on_response(self, response: types.Response) -> types.Response:
        response.headers = [h for h in response.headers if h.name != "x-checked-by"]
        response.headers.append(types.Header(name="x-checked-by", value=b"{{name}}"))
        return response


class ConfigCheck(exports.ConfigCheck):
    """The gateway calls this with the `config` of every route entry that uses the plugin, when
    it loads the plugin or the config (and in `tessera check`): `Err` refuses the change, and the
    operator reads its message next to the route."""

    def validate_config(self, config: str) -> None:
        try:
            read_config(config)
        except ValueError as e:
            raise Err(str(e)) from None


def read_config(text):
    """The route entry's `config` table (JSON), read and checked: raises `ValueError` naming the
    key."""
    settings = json.loads(text)
    if not isinstance(settings, dict):
        raise ValueError("the config must be a table")
    for key in settings:
        if key != "header":
            raise ValueError(f"{key}: unknown key, expected `header`")
    header = settings.get("header", "x-client-id")
    if not isinstance(header, str) or not header or not set(header) <= TOKEN:
        raise ValueError(f"header: `{header}` is not a header name")
    # The gateway hands plugins header names in lower case.
    return {"header": header.lower()}


def error_response(status, message):
    """The gateway's error shape: {"error": <code>, "message": ..., "request_id": ...}."""
    codes = {400: "bad_request", 401: "unauthorized", 403: "forbidden"}
    body = {"error": codes.get(status, "internal"), "message": message}
    body["request_id"] = context.request_id()
    return types.Response(
        status=status,
        headers=[types.Header(name="content-type", value=b"application/json")],
        body=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
    )
