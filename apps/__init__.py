"""llmkit apps: the `llmkit` command and the Gradio apps built on core, rag and agents."""
