"""The OpenAPI schema as the api answers: FastAPI lists a 422 for every operation with
parameters, but Hearth answers invalid input with OpenAI's 400 (api.errors), which the routers
declare with the other errors they give."""

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_FASTAPI_ONLY = ("HTTPValidationError", "ValidationError")  # the schemas of its 422


def honest_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation["responses"].pop("422", None)
        for name in _FASTAPI_ONLY:
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the schema lists for `path` (a 405's `Allow`, RFC 9110)."""
    methods: set[str] = set()
    for template, operations in honest_openapi(app)["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
            methods.update(method.upper() for method in operations)
    return sorted(methods)
