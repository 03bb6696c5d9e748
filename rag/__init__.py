"""llmkit rag: document ingestion, embeddings, a persistent index, hybrid retrieval and cited answers."""

from rag.answer import Answer, AnswerStream, Source, answer, stream_answer
from rag.chunking import Chunk, chunk_pages, make_splitter
from rag.collection import Collection, CollectionBusyError, collection_names
from rag.embeddings import Embedder, SentenceTransformerEmbedder
from rag.index import VectorIndex, load_index, make_index
from rag.loaders import LoadReport, Page, TextItem, load_file, load_files, load_text
from rag.retriever import Hit, Retriever
from rag.store import DocumentRecord, MetadataStore

__all__ = ["Answer", "AnswerStream", "Chunk", "Collection", "CollectionBusyError", "DocumentRecord", "Embedder",
           "Hit", "LoadReport", "MetadataStore", "Page", "Retriever", "SentenceTransformerEmbedder", "Source",
           "TextItem", "VectorIndex", "answer", "chunk_pages", "collection_names", "load_file", "load_files",
           "load_index", "load_text", "make_index", "make_splitter", "stream_answer"]
