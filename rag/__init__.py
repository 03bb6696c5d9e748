"""llmkit rag: document ingestion, embeddings, a persistent index and cited answers (built on core)."""
