"""An exposed app as an MCP tool: its arguments are the app's ``args_model``; a call runs one task."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

from mcp.server.mcpserver.tools import Tool
from pydantic import Field
from pydantic_core import to_jsonable_python

from keepwarm.api import Service
from keepwarm.errors import (
    Remedy,
    ResultTimeout,
    TaskFailed,
)
from keepwarm.groups.scope import Scope
from keepwarm.mcp.tool import KeepwarmTool
from keepwarm.mcp.tools import in_thread


def app_tool(scope: Scope, app: str, result_timeout: float) -> Tool:
    """A tool that runs one task on ``app``'s running service and returns what ``work()`` returned.

    Its input schema is the app's ``args_model`` (without one, the tool takes ``args``, an object);
    it acts in the server's namespace (an argument named ``namespace`` would be the app's own).
    """
    from keepwarm.app import load_args_model

    env = scope.env(app)
    model = load_args_model(env)
    description = (
        f"Run one task on the keepwarm service {env.app_target!r} (it must be running) and return "
        f"what its worker returned. {env.settings.app.description or (model.__doc__ if model else '') or ''}"
    ).strip()

    async def run(**arguments: Any) -> dict[str, Any]:
        args = to_jsonable_python(arguments if model is not None else arguments.get("args") or {})
        service = Service(env)
        # The tool runs a task now, never queues one for later: its refusal names only "start it",
        # so it checks here and submit does not check again (queue_only=True).
        await in_thread(service.require_running)
        handle = await service.asubmit(args, task_name=f"mcp:{env.app_target}", queue_only=True)
        try:
            value = await handle.aresult(timeout=result_timeout)
        except ResultTimeout:
            raise ResultTimeout(
                f"task {handle.task_id} has not finished after {result_timeout:g}s (it is {handle.state})",
                remedy=Remedy(
                    "fetch its result later",
                    f"keepwarm result {env.app_target} {handle.task_id}",
                    "get_result",
                    {"app": env.app_target, "task_id": handle.task_id},
                ),
            ) from None
        except TaskFailed as exc:
            raise TaskFailed(exc.task_id, exc.status, exc.error, None) from None
        return {"task_id": handle.task_id, "result": value}

    parameters = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty
            if info.is_required()
            else info.get_default(call_default_factory=True),
            annotation=Annotated[(info.annotation, *info.metadata, Field(description=info.description))],
        )
        for name, info in (model.model_fields.items() if model is not None else [])
    ] or [
        inspect.Parameter(
            "args", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=dict[str, Any] | None
        )
    ]
    run.__signature__ = inspect.Signature(parameters, return_annotation=dict[str, Any])  # type: ignore[attr-defined]
    tool = KeepwarmTool.from_function(run, name=env.app_target, description=description)
    # Advertise the app's own schema (its title, required keys); unknown keys are refused either way.
    schema = model.model_json_schema() if model is not None else tool.parameters
    return tool.model_copy(update={"parameters": schema | {"additionalProperties": False}})
