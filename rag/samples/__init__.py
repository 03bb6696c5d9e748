"""The sample data llmkit ships: two public-domain NIST PDFs (9 and 34 pages; README.md here says where each
comes from and under which terms) and the retrieval evaluation's hand-written questions over them, plus its
questions over company filings that are not shipped (development data).

Found through importlib.resources, so an installed wheel has them as a source checkout does (pyproject.toml
declares them as package data). `llmkit pdf-chat` indexes one as its sample collection; `rag.evaluate`
measures retrieval on all of them.

Does not: hold test fixtures (the broken and unusual PDFs the loader's tests read stay in data/pdfs/).
"""

from importlib.resources import files
from pathlib import Path


def _folder() -> Path:
    folder = files(__name__)
    # A wheel installs as files; only a zipped install would give another Traversable, and callers need paths.
    assert isinstance(folder, Path), f"the sample data must be files on disk, not {folder!r}"
    return folder


FOLDER = _folder()
PDFS = sorted(FOLDER.glob("*.pdf"))
QUESTIONS = FOLDER / "questions.jsonl"  # one JSON object a line: id, question, file, pages, kind, answer
# The same over company filings that are not shipped (rag.evaluate --set filings reads them from the shared data).
FILINGS_QUESTIONS = FOLDER / "filings_questions.jsonl"
