"""llmkit agents: tools from typed Python functions and a constrained, traced step loop (built on rag, core).

    from agents import Agent, tool

    @tool
    def add(a: int, b: int) -> int:
        \"\"\"Add two integers.\"\"\"
        return a + b

    print(Agent(tools=[add]).run("What is 2 + 3?").answer)  # on the embedded SmolLM2

LangChain interop (needs langchain_core) is in `agents.langchain`.
"""

from agents.agent import Agent, AgentRun, replay
from agents.approvals import Decision, PausedRun
from agents.backends import BackendError, ChatModel, Completion, LocalModel, OpenAIModel, ScriptedModel
from agents.builtin import calculator, current_datetime, rag_tools
from agents.steps import RunResult, Step, StepError, Trace, diff_steps, read_trace, step_schema
from agents.tools import Tool, ToolArgumentError, ToolDefinitionError, ToolError, ToolFailed, ToolTimeout, tool

__all__ = ["Agent", "AgentRun", "BackendError", "ChatModel", "Completion", "Decision", "LocalModel", "OpenAIModel",
           "PausedRun", "RunResult", "ScriptedModel", "Step", "StepError", "Tool", "ToolArgumentError",
           "ToolDefinitionError", "ToolError", "ToolFailed", "ToolTimeout", "Trace", "calculator", "current_datetime",
           "diff_steps", "rag_tools", "read_trace", "replay", "step_schema", "tool"]
