"""Cross-batch memory: the last ``M`` embeddings of training, for a batch graph that reaches past its batch.

:class:`CrossBatchMemory` is a first-in, first-out store of detached embeddings and their labels. With
``gca.memory_size > 0`` the generator (:class:`gca.GCAGenerator`) adds, for every anchor of the batch, edges from
its ``memory_k`` most correlated memory entries of *other* classes (:func:`memory_edge_index`), so that an
anchor's synthetic negatives can mix negatives of classes that are not in the batch. Memory entries are extra
nodes of the graph: they send messages and feed synthesis as candidate negatives, they are never anchors, get
no gradient, and are not classified by the node head. The memory is refreshed after every training step
(:meth:`gca.objective.Objective.end_step`) with the step's batch; under ``torchrun`` with the global batch
gathered in rank order, so every process holds the same memory.

What changes for the losses (everything else sees the batch alone):

* J_syn: an anchor's synthetic negatives are one per negative class among its batch neighbours *and* its
  memory neighbours; a class present only in memory gives a synthetic mixed from memory entries alone;
* the label-preservation loss of phase C and the classifier's view of the synthetics: synthetics may carry
  the label of a class absent from the batch (the classifier covers every training class);
* J_m, J_gce and the classifier's phase B: unchanged (batch only). ``d+`` stays the distance to the anchor's
  positives in the batch.

Which metric losses it suits: those that compare directions (cosine similarity: Multi-Similarity,
Proxy-Anchor, any pytorch-metric-learning loss whose distance normalises the embeddings). A loss on raw dot
products (N-pair) is kept in balance by the gradient every negative receives: within the batch, the pull of a
positive towards its anchor is matched by the push of the negatives away from it, so the embeddings' shared
direction gets no net gradient. A memory entry receives none, so every synthetic that a memory entry helps make
pulls without a matching push, and the batch drifts along its mean direction: on Omniglot (N-pair + GCA-HNG,
M = 4096, k = 16) the mean cosine between a batch's embeddings rose from 0.005 to 0.96 and their mean norm from
6 to 99 within 800 steps, and validation R@1 fell from 89.7 to 80.6. With M = 128 (entries at most two steps
old) the same happened, later, and routing J_syn's gradient to the negatives did not prevent it: staleness is
not the cause. Multi-Similarity with the same memory kept the mean cosine near 0.04. :func:`memory_loss_problem`
names the case, and the :class:`gca.train.Trainer` warns with it.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from gca._checks import check_int


def memory_loss_problem(metric_loss: nn.Module, embeddings_normalised: bool = False) -> Optional[str]:
    """Why ``metric_loss`` is unsuited to a cross-batch memory, or ``None`` when it compares directions.

    A loss is taken to compare directions when the embeddings reach it L2-normalised
    (``embeddings_normalised``) or its pytorch-metric-learning distance normalises them
    (``distance.normalize_embeddings``); a loss without such a distance is not judged (``None``).
    """
    distance = getattr(metric_loss, "distance", None)
    if embeddings_normalised or distance is None or getattr(distance, "normalize_embeddings", True):
        return None
    return (f"{type(metric_loss).__name__} compares raw (unnormalised) embeddings with "
            f"{type(distance).__name__}: the cross-batch memory's entries get no gradient, so the batch drifts "
            f"along its mean direction and training collapses (gca.memory; on Omniglot with N-pair it did). "
            f"Use a loss on normalised embeddings (multi_similarity, proxy_anchor) with gca.memory_size")


class CrossBatchMemory(nn.Module):
    """First-in, first-out memory of ``size`` embeddings and their labels (buffers: saved in checkpoints).

    Args:
        size: ``M``, the number of entries kept.
        embedding_dim: ``D``.

    Shapes:
        :meth:`enqueue` takes embeddings ``[N, D]`` and labels ``[N]``; :meth:`contents` returns the
        ``F <= M`` filled entries ``[F, D]`` (float32) and ``[F]``, oldest first.
    """

    def __init__(self, size: int, embedding_dim: int):
        super().__init__()
        check_int("memory_size", size)
        check_int("embedding_dim", embedding_dim)
        self.size = size
        self.register_buffer("embeddings", torch.zeros(size, embedding_dim))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("next_slot", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, embeddings: Tensor, labels: Tensor) -> None:
        """Write ``embeddings`` (detached, as float32) and ``labels`` over the oldest entries.

        A batch larger than the memory keeps its last ``M`` rows.
        """
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"memory entries must be [N, {self.embeddings.shape[1]}], got {tuple(embeddings.shape)}")
        if labels.shape != embeddings.shape[:1]:
            raise ValueError(f"labels must be [{embeddings.shape[0]}] for the memory, got {tuple(labels.shape)}")
        embeddings, labels = embeddings[-self.size:], labels[-self.size:]
        count = embeddings.shape[0]
        slots = (self.next_slot + torch.arange(count, device=self.labels.device)) % self.size
        self.embeddings[slots] = embeddings.detach().to(self.embeddings.dtype)
        self.labels[slots] = labels.to(self.labels.device)
        self.next_slot.copy_((self.next_slot + count) % self.size)
        self.filled.copy_(torch.clamp(self.filled + count, max=self.size))

    def contents(self) -> Optional[Tuple[Tensor, Tensor]]:
        """The filled entries, oldest first, or ``None`` while the memory is empty."""
        filled = int(self.filled)
        if filled == 0:
            return None
        if filled < self.size:
            return self.embeddings[:filled], self.labels[:filled]
        order = (torch.arange(self.size, device=self.labels.device) + self.next_slot) % self.size
        return self.embeddings[order], self.labels[order]

    def extra_repr(self) -> str:
        return f"size={self.size}, embedding_dim={self.embeddings.shape[1]}, filled={int(self.filled)}"
