"""llmkit apps, built on core, rag and agents: the `llmkit` command (cli.py), one package per app (pdf_chat/), and
what every app shares (common.py). Apps import each other never; gradio is imported only by an app's ui.py."""
