"""Chat with PDFs in the browser (`llmkit pdf-chat`): upload into named collections, ask, get streamed answers
with checked page citations, open the cited page; or let an agent search and read the pages.

app.py holds `PdfChat`, whose methods are the handlers (tested without a server); ui.py builds the Gradio
page over it (`build_demo`, imported from there: it imports gradio); command.py is the CLI command.
"""

from apps.pdf_chat.app import PdfChat, Reply, Settings, source_rows
from apps.pdf_chat.command import PdfChatSettings, add_arguments, run, serve

__all__ = ["PdfChat", "PdfChatSettings", "Reply", "Settings", "add_arguments", "run", "serve", "source_rows"]
