"""llmkit agents: tools from typed Python functions and a constrained, traced step loop (built on rag, core)."""
