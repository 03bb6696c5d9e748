"""llmkit rag: document ingestion, embeddings, a persistent index and (next) hybrid retrieval and cited answers."""

from rag.chunking import Chunk, chunk_pages, make_splitter
from rag.collection import Collection
from rag.embeddings import Embedder, SentenceTransformerEmbedder
from rag.index import VectorIndex, load_index, make_index
from rag.loaders import LoadReport, Page, load_file, load_files
from rag.store import MetadataStore

__all__ = ["Chunk", "Collection", "Embedder", "LoadReport", "MetadataStore", "Page", "SentenceTransformerEmbedder",
           "VectorIndex", "chunk_pages", "load_file", "load_files", "load_index", "make_index", "make_splitter"]
