"""llmkit rag: document ingestion, embeddings, a persistent index, hybrid retrieval and cited answers.

The names below are imported on first use (core.lazy), not with the package: `llmkit search` needs the collection
and the retriever, not the loaders' or the embedding model's dependencies."""

from core.lazy import lazy_exports

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

__all__, __getattr__, __dir__ = lazy_exports("rag", _HOMES, globals())
__all__ = sorted([*__all__, "answer"])
