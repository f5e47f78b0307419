"""The OpenAPI document: the generic routes, and for each app the scope can name, its own
``POST /v1/apps/<app>/tasks`` whose body is that app's args model's JSON schema."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from keepwarm.errors import KeepwarmError
from keepwarm.http.gateway import Gateway

GENERIC_TASKS = "/v1/apps/{app}/tasks"
REF_TEMPLATE = "#/components/schemas/{model}"


def openapi_document(app: FastAPI, gateway: Gateway) -> dict[str, Any]:
    """Built on each request for it, so that an app added to the apps path shows up."""
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    if gateway.read_only:  # it offers GET only
        document["paths"] = {
            path: {method: op for method, op in item.items() if method == "get"}
            for path, item in document.get("paths", {}).items()
            if "get" in item
        }
        return document
    generic = document["paths"][GENERIC_TASKS]["post"]
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in gateway.scope.app_names():
        try:
            model = gateway.service(name).args_model
        except (KeepwarmError, ImportError, SyntaxError):
            continue  # an app whose code does not load is listed by the generic path only
        body: dict[str, Any] = {"type": "object", "additionalProperties": True}
        if model is not None:  # its schemas named after the app: apps' models may share a name
            template = REF_TEMPLATE.format(model=f"{name}.{{model}}")
            schema = model.model_json_schema(ref_template=template)
            schemas.update({f"{name}.{key}": value for key, value in schema.pop("$defs", {}).items()})
            schemas[f"{name}.{model.__name__}"] = schema
            body = {"$ref": template.format(model=model.__name__)}
        operation = copy.deepcopy(generic)
        operation["operationId"] = f"submit_{name}"
        operation["summary"] = f"Submit a task to {name}"
        operation["parameters"] = [p for p in operation.get("parameters", []) if p.get("name") != "app"]
        operation["requestBody"] = {
            "required": False,  # no body: no args
            "description": f"{name}'s args" + (f" ({model.__name__})" if model is not None else ""),
            "content": {"application/json": {"schema": body}},
        }
        document["paths"][f"/v1/apps/{name}/tasks"] = {"post": operation}
    return document
