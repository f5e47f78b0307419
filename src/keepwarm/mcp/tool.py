"""A keepwarm MCP tool: unknown or bad arguments refused on one line, keepwarm's errors told to
agents with the next step as a tool call."""

from __future__ import annotations

import difflib
import json
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from pydantic import BaseModel, ValidationError

from keepwarm.errors import (
    KeepwarmError,
)
from keepwarm.settings import describe_error


class KeepwarmTool(Tool):
    """A tool that refuses unknown arguments and reports bad ones on one line, and whose keepwarm
    errors reach the agent as keepwarm's own message, with the next step named as a tool call."""

    async def run(
        self, arguments: dict[str, Any], context: Context[Any, Any], convert_result: bool = False
    ) -> Any:
        check_arguments(self.name, self.fn_metadata.arg_model, self.fn_metadata.pre_parse_json(arguments))
        try:
            return await super().run(arguments, context, convert_result)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, KeepwarmError):
                raise ToolError(for_agents(cause, self.name)) from None
            if isinstance(cause, ValueError) or type(cause) is ToolError:
                raise ToolError(str(cause)) from None
            raise


def check_arguments(tool: str, model: type[BaseModel], arguments: dict[str, Any]) -> None:
    """Refuse a call whose arguments the tool does not take (naming those it takes) or whose values
    its schema refuses, in one line each: an agent reads it and corrects the call."""
    known = [info.alias or name for name, info in model.model_fields.items()]
    takes = f"{tool} takes: {', '.join(known) or 'no arguments'}"
    unknown = [key for key in arguments if key not in known]
    if unknown:
        close = [m for key in unknown for m in difflib.get_close_matches(key, known, n=1)]
        hint = f" (did you mean {', '.join(repr(m) for m in close)}?)" if close else ""
        plural = "s" if len(unknown) > 1 else ""
        raise ToolError(f"unknown argument{plural} {', '.join(repr(k) for k in unknown)}{hint}; {takes}")
    try:
        model.model_validate(arguments)
    except ValidationError as exc:
        problems = "; ".join(describe_error(error) for error in exc.errors())
        raise ToolError(f"invalid arguments: {problems}; {takes}") from None


def for_agents(error: KeepwarmError, tool: str) -> str:
    """keepwarm's message for an agent: its remedy as the tool to call and its arguments, not as a
    command line the agent cannot run."""
    remedy = error.remedy
    if remedy is None:
        return str(error)
    if remedy.tool is None and not remedy.arguments:
        return error.problem
    return f"{error.problem}; {remedy.advice}: call {remedy.tool or tool} with {json.dumps(remedy.arguments)}"
