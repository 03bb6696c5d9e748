"""llmkit rag: document ingestion, embeddings, a persistent index, hybrid retrieval and cited answers.

The names below are imported on first use (PEP 562), not with the package: `llmkit search` needs the collection
and the retriever, not the answer's or the loaders' dependencies."""

import importlib

# `answer` is also a submodule's name: importing rag.answer (as any caller of stream_answer does) binds the module
# to rag.answer, over a lazily set function. Imported now, the function wins (the module imports in ~0.1 s more
# than the retriever, which every user of it loads anyway).
from rag.answer import answer as answer

_HOMES = {
    "rag.answer": ("Answer", "AnswerStream", "Source", "stream_answer"),
    "rag.chunking": ("Chunk", "chunk_pages", "make_splitter"),
    "rag.collection": ("Collection", "CollectionBusyError", "collection_names"),
    "rag.embeddings": ("Embedder", "SentenceTransformerEmbedder"),
    "rag.index": ("VectorIndex", "load_index", "make_index"),
    "rag.loaders": ("LoadReport", "Page", "TextItem", "load_file", "load_files", "load_text"),
    "rag.retriever": ("Hit", "Retriever"),
    "rag.store": ("DocumentRecord", "MetadataStore"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted([*_MODULE_OF, "answer"])


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'rag' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
