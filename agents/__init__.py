"""llmkit agents: tools from typed Python functions and a constrained, traced step loop (built on rag, core).

    from agents import Agent, tool

    @tool
    def add(a: int, b: int) -> int:
        \"\"\"Add two integers.\"\"\"
        return a + b

    print(Agent(tools=[add]).run("What is 2 + 3?").answer)  # on the embedded SmolLM2

The model is any core.ChatModel: `Agent(core.RemoteLLM(url), ...)` for a model behind an OpenAI-compatible
server, `NativeToolsLLM(url)` for one that calls tools natively, `agents.langchain.LangChainModel` for a
LangChain chat model (that module, like the rest of the LangChain interop, needs langchain_core).
`ScriptedModel` is core's, re-exported for tests and replays. On a local core.LLM the agent routes (agents.routing):
the tool is chosen first, by the model's scores and a MiniLM router, then its arguments, with short ones held to
phrases of the task; mark an argument `Annotated[str, FromInput]` or `Annotated[str, FreeText]` to say which.
"""

from agents.agent import Agent, AgentRun, replay
from agents.approvals import Decision, PausedRun
from agents.backends import NativeToolsLLM
from agents.builtin import calculator, current_datetime, rag_tools, summarize_tool
from agents.routing import FreeText, FromInput, Routing
from agents.steps import RunResult, Step, StepError, Trace, diff_steps, read_trace, step_schema
from agents.tools import Tool, ToolArgumentError, ToolDefinitionError, ToolError, ToolFailed, ToolTimeout, tool
from core.chat import ScriptedModel

__all__ = ["Agent", "AgentRun", "Decision", "FreeText", "FromInput", "NativeToolsLLM", "PausedRun", "Routing",
           "RunResult", "ScriptedModel", "Step", "StepError", "Tool", "ToolArgumentError", "ToolDefinitionError",
           "ToolError", "ToolFailed", "ToolTimeout", "Trace", "calculator", "current_datetime", "diff_steps",
           "rag_tools", "read_trace", "replay", "step_schema", "summarize_tool", "tool"]
