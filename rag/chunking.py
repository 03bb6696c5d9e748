"""Chunking: pages -> token-bounded chunks with overlap, each tied to its file, page, character span and locator.

Uses LangChain's RecursiveCharacterTextSplitter (paragraphs, then lines, sentences, words), measuring
length with the embedding model's own tokenizer so no chunk is silently truncated when embedded.
Each page is split on its own, so a chunk never spans two pages and a citation names one page.

A chunk also carries a context (rag.context: the document's identity and the headings atop its page) that the
index reads before its text; citations quote the text alone.

A chunk's locator says where in its document it is, as a citation prints it after the name: "p. 3" for a
page, "L12-30" for the lines of a text item, or the text item's own locator (an email's "<message-id>").
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rag.context import chunk_context, document_identity, page_headings, running_lines
from rag.loaders import Page

if TYPE_CHECKING:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

CHUNK_TOKENS = 200  # under all-MiniLM-L6-v2's 256-token window, with room for its special tokens
OVERLAP_TOKENS = 40


def page_locator(page: int) -> str:
    return f"p. {page}"


def line_locator(first: int, last: int) -> str:
    """Lines `first` to `last`, 1-based and inclusive: "L12-30", or "L12" for one line."""
    return f"L{first}" if first == last else f"L{first}-{last}"


@dataclass
class Chunk:
    doc_id: str  # the document's content hash
    file_name: str
    page: int  # 1-based
    start: int  # character offsets of `text` in the page's text
    end: int
    text: str
    locator: str = ""  # where in its document (see the module docstring); "" means its page: "p. N"
    context: str = ""  # indexed before `text`, never cited (rag.context)

    def __post_init__(self) -> None:
        if not self.locator:
            self.locator = page_locator(self.page)


def make_splitter(count_tokens: Callable[[str], int], chunk_tokens: int = CHUNK_TOKENS,
                  overlap_tokens: int = OVERLAP_TOKENS) -> RecursiveCharacterTextSplitter:
    from langchain_text_splitters import RecursiveCharacterTextSplitter  # ~0.5 s: only when a document is chunked

    if not 0 <= overlap_tokens < chunk_tokens:
        raise ValueError(f"overlap ({overlap_tokens}) must be >= 0 and below the chunk size ({chunk_tokens})")
    return RecursiveCharacterTextSplitter(chunk_size=chunk_tokens, chunk_overlap=overlap_tokens,
                                          length_function=count_tokens)


def chunk_pages(pages: list[Page], doc_id: str, file_name: str, splitter: RecursiveCharacterTextSplitter,
                contextual: bool = True) -> list[Chunk]:
    """The chunks of a document's pages; with `contextual`, each with its context (rag.context)."""
    identity = document_identity(pages, file_name) if contextual else ""
    running = running_lines(pages) if contextual else set()
    chunks = []
    for page in pages:
        context = chunk_context(identity, page_headings(page, running)) if contextual else ""
        # Offsets at which lines 2, 3, ... begin, for pages cited by line.
        line_starts = [m.end() for m in re.finditer("\n", page.text)] if page.by_lines else []
        start = -1
        for piece in splitter.split_text(page.text):
            # Found by search (the splitter's own add_start_index miscounts when length is in tokens): the
            # first match after the previous chunk's start; in text that repeats itself exactly, that
            # may be an earlier copy of the same words.
            start = page.text.find(piece, start + 1)
            assert start >= 0, "the splitter returns substrings of its input, in order"
            end = start + len(piece)
            if page.locator is not None:
                locator = page.locator
            elif page.by_lines:  # the lines of the chunk's first and last characters
                locator = line_locator(bisect_right(line_starts, start) + 1, bisect_right(line_starts, end - 1) + 1)
            else:
                locator = page_locator(page.number)
            chunks.append(Chunk(doc_id, file_name, page.number, start, end, piece, locator, context))
    return chunks
