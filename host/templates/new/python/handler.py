"""{{name}}: a Tessera handler plugin in Python. It is a route's target and answers with a
greeting:

    [[routes]]
    path = "/{{name}}/{name}"
    handler = { plugin = "{{name}}", config = { greeting = "Hello" } }

`GET /{{name}}/ada` → {"message":"Hello, ada!","request_id":"…"}

The gateway's interfaces are the `wit_world` bindings componentize-py generates from
wit/gateway.wit. The gateway creates a fresh instance for every request.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, context, log, types


class RequestHandler(exports.RequestHandler):
    def handle(self, request: types.Request) -> types.Response:
        # `ConfigCheck` below has passed this config before the gateway serves with it.
        settings = read_config(config.get())
        name = context.route_param("name") or "world"
        if len(name) > 64:
            return error_response(400, "name: at most 64 characters")
        log.log(log.Level.DEBUG, f"greeting {name}")
        body = {"message": f"{settings['greeting']}, {name}!", "request_id": context.request_id()}
        return json_response(200, body)


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
        if key != "greeting":
            raise ValueError(f"{key}: unknown key, expected `greeting`")
    greeting = settings.get("greeting", "Hello")
    if not isinstance(greeting, str):
        raise ValueError("greeting: must be a string")
    if not greeting.strip():
        raise ValueError("greeting: must not be empty")
    return {"greeting": greeting}


def json_response(status, value):
    return types.Response(
        status=status,
        headers=[types.Header(name="content-type", value=b"application/json")],
        body=json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(),
    )


def error_response(status, message):
    """The gateway's error shape: {"error": <code>, "message": ..., "request_id": ...}."""
    codes = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found"}
    body = {"error": codes.get(status, "internal"), "message": message}
    body["request_id"] = context.request_id()
    return json_response(status, body)
