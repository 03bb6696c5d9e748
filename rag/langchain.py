"""LangChain views of llmkit's RAG parts: our retriever as a `BaseRetriever`, any embedder as `Embeddings`.

So a LangChain chain can retrieve from an llmkit collection, and a LangChain vector store can embed with
our (offline) embedder. langchain_core is not a dependency of llmkit: only code that imports this module
needs it.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from rag.embeddings import Embedder
from rag.retriever import Hit, Mode


class LLMKitRetriever(BaseRetriever):
    """`LLMKitRetriever(retriever=Retriever(collection), k=5)`: Documents with file, page and scores in metadata."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any  # a rag.Retriever (typed Any: pydantic cannot validate it)
    k: int = 5
    mode: Mode = "hybrid"
    documents: list[str] | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = self.retriever.search(query, k=self.k, mode=self.mode, documents=self.documents)
        return [to_document(hit) for hit in hits]


def to_document(hit: Hit) -> Document:
    chunk = hit.chunk
    metadata = {"file": chunk.file_name, "page": chunk.page, "locator": chunk.locator, "doc_id": chunk.doc_id,
                "chunk_id": chunk.id, "start": chunk.start, "end": chunk.end, "score": hit.score,
                "dense_score": hit.dense_score, "bm25_score": hit.bm25_score}
    return Document(page_content=chunk.text, metadata=metadata, id=str(chunk.id))


class LLMKitEmbeddings(Embeddings):
    """`LLMKitEmbeddings(SentenceTransformerEmbedder())`: unit-length vectors, so cosine = inner product."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed([text])[0].tolist()

