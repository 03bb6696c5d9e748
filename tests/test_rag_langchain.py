"""llmkit's retriever and embedder inside LangChain: a runnable chain and LangChain's own vector store."""

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda
from langchain_core.vectorstores import InMemoryVectorStore

from rag import Collection, Retriever
from rag.langchain import LLMKitEmbeddings, LLMKitRetriever

GUIDE = "nist-sp800-90b-entropy-suite-user-guide.pdf"


@pytest.fixture(scope="module")
def collection(demo_data_dir):
    with Collection.open("demo", data_dir=demo_data_dir) as opened:
        yield opened


def test_retriever_returns_documents_with_pages_and_scores(collection):
    retriever = Retriever(collection)
    question = "Which file contains the Markov estimate method?"
    documents = LLMKitRetriever(retriever=retriever, k=3).invoke(question)
    hits = retriever.search(question, k=3)
    assert [d.page_content for d in documents] == [h.chunk.text for h in hits]
    assert documents[0].metadata["file"] == GUIDE and documents[0].metadata["page"] == 3
    assert documents[0].metadata["score"] == pytest.approx(hits[0].score)


def test_retriever_composes_in_a_chain(collection):
    retriever = LLMKitRetriever(retriever=Retriever(collection), k=2, mode="bm25")
    chain = retriever | RunnableLambda(lambda docs: [f"{d.metadata['file']} p. {d.metadata['page']}" for d in docs])
    cited = chain.invoke("markov.py")
    assert len(cited) == 2 and cited[0] == f"{GUIDE} p. 3"


def test_embeddings_in_a_langchain_vector_store(collection):
    embeddings = LLMKitEmbeddings(collection.embedder)
    query = embeddings.embed_query("entropy estimate")
    assert len(query) == collection.embedder.dim and np.linalg.norm(query) == pytest.approx(1, abs=1e-3)
    store = InMemoryVectorStore(embeddings)
    store.add_documents([Document("The Markov estimate uses transition probabilities."),
                         Document("SRx-server listens for proxy connections on a TCP port."),
                         Document("Chocolate cake needs cocoa and sugar.")])
    best = store.similarity_search("Which port does the server use?", k=1)
    assert best[0].page_content.startswith("SRx-server")

