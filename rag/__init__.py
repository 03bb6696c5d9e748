"""llmkit rag: document ingestion, embeddings, a persistent index and hybrid retrieval (cited answers: next)."""

from rag.chunking import Chunk, chunk_pages, make_splitter
from rag.collection import Collection
from rag.embeddings import Embedder, SentenceTransformerEmbedder
from rag.index import VectorIndex, load_index, make_index
from rag.loaders import LoadReport, Page, load_file, load_files
from rag.retriever import Hit, Retriever
from rag.store import MetadataStore

__all__ = ["Chunk", "Collection", "Embedder", "Hit", "LoadReport", "MetadataStore", "Page", "Retriever",
           "SentenceTransformerEmbedder", "VectorIndex", "chunk_pages", "load_file", "load_files", "load_index",
           "make_index", "make_splitter"]
