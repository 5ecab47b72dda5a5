"""Evaluation utilities: exact, chunked retrieval metrics and dataset embedding.

Public API:

* :func:`retrieval_metrics` - Recall@K, MAP@R and R-Precision (leave-one-out or
  query/gallery), exact and memory-bounded.
* :func:`embed_dataset` - run a model over a data loader and collect embeddings/labels.
* :func:`faiss_available` - whether the optional faiss backend can be used.
"""

from gca.evaluation.embed import embed_dataset
from gca.evaluation.metrics import faiss_available, retrieval_metrics

__all__ = ["retrieval_metrics", "embed_dataset", "faiss_available"]
