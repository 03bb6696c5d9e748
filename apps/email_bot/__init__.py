"""The email responder (issue 14): IMAP in, triage, grounded drafts, an approval queue, SMTP out, exactly once.

config.py reads the TOML config (passwords only through `config.password`), parse.py turns raw messages into
`Email`s (never raising anything but `Unparseable`), triage.py decides skip / quarantine / draft (header rules, the
rate limit, the model's constrained choice), cli.py is the `llmkit email` command. ledger.py, imap.py, smtp.py and
service.py run the service; drafting.py writes replies and ui.py is the approval queue. Importing the package loads
no model, no gradio and no network library; it exports cli.py's `add_arguments` and `run` (the CLI table's entry).
"""

from apps.email_bot.cli import add_arguments, run

__all__ = ["add_arguments", "run"]
