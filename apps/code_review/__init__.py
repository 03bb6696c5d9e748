"""The code reviewer and debugger: `llmkit review` (analyzers on a file, folder, diff or revision range, findings
explained by the model and written as Markdown, JSON, SARIF or GitHub annotations), `llmkit debug` (tests in a
sandbox, fault localisation, patches the tests accept) and the web app `llmkit code-review`.

Review: inputs.py reads what to review, analyzers.py runs ruff, bandit, radon and mypy, review.py keeps the findings
on changed lines, explain.py has the model choose each explanation among sentences from the tool's result, report.py
writes the formats; cli.py holds both commands' flags. Debug: debug.py and the modules it names. app.py holds the
web app's command and handlers, ui.py its page (it imports gradio). Importing the package loads neither torch nor
gradio: the CLI imports it to build its parser.
"""

from apps.code_review.app import add_arguments, run

__all__ = ["add_arguments", "run"]
