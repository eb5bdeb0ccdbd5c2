"""The OpenAPI document, made to say what the service really answers: every error in the JSON
error model (`{"detail": ...}`), a 422 in the shape `validation_body()` writes, and the statuses
any route can give (400 for an odd URL, 401 without a key). The property tests
(tests/service/test_fuzz_api.py) check the live answers against it.
"""

from __future__ import annotations

from fastapi import FastAPI

from service.api.schemas import Message, ValidationErrorPublic

ERROR = {"$ref": "#/components/schemas/Message"}
VALIDATION = {"$ref": "#/components/schemas/ValidationErrorPublic"}


def _describe(schema: dict) -> dict:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (Message, ValidationErrorPublic):
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 shape, which we do not send
        components.pop(name, None)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            codes = {"400": "A NUL byte or undecodable bytes in the URL"}
            if operation.get("security"):
                codes["401"] = "No valid API key (auth is on)"
            if any(p.get("in") == "path" for p in operation.get("parameters", [])):
                codes["404"] = "Not found (or not yours)"
            if operation.get("parameters") or operation.get("requestBody"):
                codes["422"] = "Invalid parameters or body: each problem with its field"
            for code, description in codes.items():
                responses.setdefault(code, {"description": description})
            for code, response in responses.items():
                if code[0] in "45":
                    body = VALIDATION if code == "422" else ERROR
                    response["content"] = {"application/json": {"schema": body}}
    return schema


def install(app: FastAPI) -> None:
    make = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = _describe(make())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
