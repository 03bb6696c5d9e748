"""The code reviewer and debugger (`llmkit review`, `llmkit debug`, `llmkit code-review`)."""
