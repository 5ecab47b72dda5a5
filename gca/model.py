"""``GCAHNG``: the graph, the propagation, the heads, the schedules and every loss in one module."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data

from gca._checks import check_embeddings_and_labels, check_generator_options, check_label_range
from gca._precision import full_precision
from gca.diagnostics import generator_diagnostics
from gca.graph import build_batch_graph
from gca.heads import ChannelWeightHead, NodeClassifierHead
from gca.losses.compat import resolve_synthetic_gradient
from gca.losses.generator import diversity_loss, hardness_loss, label_preservation_loss
from gca.losses.npair import NPairLoss
from gca.losses.schedules import HardnessSchedule, SyntheticWeightSchedule
from gca.losses.synthetic import synthetic_metric_loss
from gca.nn.propagation import GraphPropagation
from gca.synthesis import Synthetics, candidate_edges, synthesize_negatives


@dataclass
class Generation:
    """Everything one generator pass produces (see :meth:`GCAHNG.generate`)."""

    graph: Data
    node_states: Tensor      # [B, D]
    edge_states: Tensor      # [E, D]
    lam: Tensor              # [E, D] (or [E, 1] with per_channel=False)
    node_logits: Tensor      # [B, num_classes]
    synthetics: Synthetics
    gamma: Tensor            # hardness factor used


class GCAHNG(nn.Module):
    r"""Globally Correlation-Aware Hard Negative Generation (Peng et al., IJCV 2025).

    Owns the propagation network, the generator head (:math:`\lambda`), the node-classification head, the
    label-preservation classifier, the metric loss and the two epoch-level schedules. It exposes the losses
    of the three phases of METHOD 2.6 and never steps an optimiser itself:

    * :meth:`metric_losses` (phase A): ``J_m + w_syn J_syn + J_gce``, with ``lambda`` detached and the
      embeddings attached, so ``J_syn`` trains the embedding network and ``J_gce`` trains the GNN and the
      embedding network;
    * :meth:`classifier_loss` (phase B): the classifier on detached real embeddings;
    * :meth:`generator_losses` (phase C): a second propagation from detached embeddings;
      ``J_gen = (F_s J_soft + w_dot J_sim + w_div J_div) / 2`` trains only the GNN and its heads.

    Call :meth:`end_epoch` at the end of every epoch to move the schedules on.

    Args:
        embedding_dim: :math:`D`.
        num_classes: number of training classes (labels must lie in ``[0, num_classes)``).
        num_layers, heads, layer, dropout, layer_kwargs: the propagation network
            (:class:`gca.nn.GraphPropagation`); ``num_layers=0`` is the "no propagation" ablation.
        edges, k, self_loops: the batch graph (:func:`gca.build_batch_graph`).
        per_channel: one interpolation weight per channel (``False``: one scalar per pair, an ablation).
        negatives_per_class: ``"all"`` or ``"one"`` sample of each negative class per synthetic.
        mixing: mixing of the samples of a class, ``"sequential"``, ``"dirichlet"`` or ``"mean"``.
        alpha, beta: the hardness and synthetic-weight schedules.
        schedule_scale: ``"absolute"`` (the authors': ``gamma = exp(-alpha / J_m)`` on the loss as it is) or
            ``"first_epoch"`` (the loss in units of its first epoch's mean, so that alpha and beta mean the
            same for any metric loss: ``gamma = e^-alpha`` and ``w_syn = 1 - e^-beta`` after epoch 1).
        softmax_factor, hardness_weight, diversity_weight: :math:`F_s`, :math:`w_{dot}`, :math:`w_{div}`.
        classifier_weight: factor of the classifier's cross-entropy (10 in the authors' code).
        node_loss_weight: factor of the node-classification loss in the metric side.
        metric_loss: any loss callable as ``loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)``
            (pytorch-metric-learning's, for example); default :class:`gca.losses.NPairLoss`.
        synthetic_loss_mode: how ``metric_loss`` sees synthetics (:func:`gca.losses.synthetic_metric_loss`).
        synthetic_gradient: where J_syn's gradient goes through a synthetic: ``"full"`` (anchor and negatives,
            the authors'), ``"negatives"`` (the negatives only, see :func:`gca.synthesize_negatives`), or
            ``"auto"``: ``"negatives"`` when the loss takes synthetics as samples of a class or as negatives of
            a proxy (proxy and classification losses), ``"full"`` for pair losses.
        symmetric_edges: keep one edge state per unordered pair (:class:`gca.nn.GraphPropagation`), which
            halves the edge work on the full graph with the same result; ``"auto"`` uses it whenever the
            graph is full and the layer type supports it.
        diagnostics: in training mode, :meth:`generator_losses` also returns the ``diag_*`` values of
            :func:`gca.diagnostics.generator_diagnostics` (how hard, class-preserving and varied the
            synthetics are).
    """

    has_generator = True

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        *,
        num_layers: int = 2,
        heads: int = 4,
        layer: str = "gca",
        dropout: float = 0.1,
        layer_kwargs: Optional[dict] = None,
        edges: str = "full",
        k: Optional[int] = None,
        self_loops: bool = True,
        per_channel: bool = True,
        negatives_per_class: str = "all",
        mixing: str = "sequential",
        alpha: float = 4.0,
        beta: float = 30.0,
        softmax_factor: float = 20.0,
        hardness_weight: float = 10.0,
        diversity_weight: float = 10.0,
        classifier_weight: float = 10.0,
        node_loss_weight: float = 1.0,
        metric_loss: Optional[Callable] = None,
        synthetic_loss_mode: str = "auto",
        synthetic_gradient: str = "auto",
        symmetric_edges="auto",
        diagnostics: bool = True,
        schedule_scale: str = "absolute",
    ):
        super().__init__()
        if embedding_dim % heads != 0:
            raise ValueError(f"embedding dimension D={embedding_dim} must be divisible by heads H={heads}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        check_generator_options(edges=edges, k=k, mixing=mixing, negatives_per_class=negatives_per_class)
        self.embedding_dim, self.num_classes = embedding_dim, num_classes
        self.edges, self.k, self.self_loops = edges, k, self_loops
        self.negatives_per_class, self.mixing = negatives_per_class, mixing
        self.softmax_factor, self.hardness_weight = softmax_factor, hardness_weight
        self.diversity_weight, self.classifier_weight = diversity_weight, classifier_weight
        self.node_loss_weight, self.synthetic_loss_mode = node_loss_weight, synthetic_loss_mode
        self.propagation = GraphPropagation(embedding_dim, num_layers, heads, layer, dropout, **(layer_kwargs or {}))
        if symmetric_edges == "auto":
            symmetric_edges = edges == "full" and self.propagation.supports_pairs
        elif symmetric_edges and edges != "full":
            raise ValueError("symmetric_edges needs edges='full' (a knn graph is not symmetric)")
        self.symmetric_edges = bool(symmetric_edges)
        self.lambda_head = ChannelWeightHead(embedding_dim, per_channel)
        self.node_head = NodeClassifierHead(embedding_dim, num_classes)
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.metric_loss = metric_loss if metric_loss is not None else NPairLoss()
        self.synthetic_gradient = resolve_synthetic_gradient(self.metric_loss, synthetic_loss_mode, synthetic_gradient)
        self.hardness = HardnessSchedule(alpha, scale=schedule_scale)
        self.synthetic_weight = SyntheticWeightSchedule(beta, scale=schedule_scale)
        self.diagnostics = diagnostics

    # ----------------------------------------------------------------------------------- parameters
    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """The GNN and its heads (the authors' ``opt_gnn``)."""
        for module in (self.propagation, self.lambda_head, self.node_head):
            yield from (p for p in module.parameters() if p.requires_grad)

    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        """The label-preservation classifier (the authors' ``opt_s``)."""
        return self.classifier.parameters()

    def metric_loss_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the metric loss (proxies of Proxy-Anchor, for example): they belong with the
        embedding network's optimiser."""
        return self.metric_loss.parameters() if isinstance(self.metric_loss, nn.Module) else iter(())

    # ----------------------------------------------------------------------------------- forward
    def _check(self, embeddings: Tensor, labels: Tensor) -> None:
        check_embeddings_and_labels(embeddings, labels, min_classes=2)
        if embeddings.shape[1] != self.embedding_dim:
            raise ValueError(f"embeddings have D={embeddings.shape[1]} but the model was built for "
                             f"D={self.embedding_dim}")
        check_label_range(labels, self.num_classes)

    def generate(self, embeddings: Tensor, labels: Tensor, *, detach_lambda: bool = False,
                 generator: Optional[torch.Generator] = None, anchor_gradient: bool = True) -> Generation:
        """Build the batch graph, propagate, read the heads and synthesise negatives.

        Gradients reach ``embeddings`` through the graph and the synthesis unless the caller detaches
        them; ``detach_lambda`` keeps the synthesis from training the GNN.
        """
        self._check(embeddings, labels)
        graph = build_batch_graph(embeddings, labels, self.edges, self.k, self.self_loops)
        # the propagation and its heads run in the ambient autocast precision (they are the cost); lambda,
        # the logits and everything after them in float32, as the baseline's loss
        node_states, edge_states = self.propagation(graph.x, graph.edge_index, graph.edge_attr, graph.same_class,
                                                    symmetric=self.symmetric_edges)
        lam = self.lambda_head(edge_states).float()
        node_logits = self.node_head(node_states).float()
        gamma = self.hardness.factor().to(embeddings.device)
        with full_precision(embeddings.device):
            synthetics = synthesize_negatives(embeddings.float(), labels, graph.edge_index,
                                              lam.detach() if detach_lambda else lam, gamma, self.mixing,
                                              self.negatives_per_class, generator, anchor_gradient)
        return Generation(graph, node_states, edge_states, lam, node_logits, synthetics, gamma)

    forward = generate

    # ----------------------------------------------------------------------------------- phase A
    def metric_losses(self, embeddings: Tensor, labels: Tensor,
                      generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """Phase A: ``total = J_m + w_syn * J_syn + node_loss_weight * J_gce``.

        Returns a dict with ``total``, ``metric`` (J_m), ``synthetic`` (J_syn), ``synthetic_weight``,
        ``node`` (J_gce) and ``gamma``; in training mode J_m is recorded for the hardness schedule.
        """
        out = self.generate(embeddings, labels, detach_lambda=True, generator=generator,
                            anchor_gradient=self.synthetic_gradient == "full")
        with full_precision(embeddings.device):
            z = embeddings.float()
            j_m = self.metric_loss(z, labels)
            j_syn = synthetic_metric_loss(self.metric_loss, z, labels, out.synthetics, self.synthetic_loss_mode)
            j_gce = F.cross_entropy(out.node_logits, labels)
        w_syn = self.synthetic_weight.factor().to(embeddings.device)
        if self.training:
            self.hardness.update(j_m)
        return {"total": j_m + w_syn * j_syn + self.node_loss_weight * j_gce, "metric": j_m, "synthetic": j_syn,
                "synthetic_weight": w_syn, "node": j_gce, "gamma": out.gamma}

    # ----------------------------------------------------------------------------------- phase B
    def classifier_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Phase B: ``classifier_weight * CE(classifier(sg(z)), y)``; trains only the classifier."""
        check_label_range(labels, self.num_classes)
        with full_precision(embeddings.device):
            return self.classifier_weight * F.cross_entropy(self.classifier(embeddings.detach().float()), labels)

    # ----------------------------------------------------------------------------------- phase C
    def generator_losses(self, embeddings: Tensor, labels: Tensor,
                         generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """Phase C: a second propagation from ``sg(z)``; ``total = J_gen`` trains the GNN only.

        Returns ``total``, ``label`` (J_soft, before ``softmax_factor``), ``hardness`` (J_sim),
        ``diversity`` (J_div) and ``num_synthetics``; in training mode J_gen is recorded for the
        synthetic-weight schedule.
        """
        z = embeddings.detach().float()
        out = self.generate(z, labels, generator=generator)
        with full_precision(z.device):
            j_soft = label_preservation_loss(self.classifier, out.synthetics)
            j_sim = hardness_loss(z, out.synthetics)
            used = candidate_edges(labels, out.graph.edge_index)
            j_div = diversity_loss(out.lam[used], out.graph.edge_index[1, used], z.shape[0])
            j_gen = 0.5 * (self.softmax_factor * j_soft + self.hardness_weight * j_sim + self.diversity_weight * j_div)
        result = {"total": j_gen, "label": j_soft, "hardness": j_sim, "diversity": j_div,
                  "num_synthetics": torch.tensor(len(out.synthetics))}
        if self.training:
            self.synthetic_weight.update(j_gen)
            if self.diagnostics:
                diag = generator_diagnostics(z, labels, out.graph.edge_index, out.lam, out.synthetics, self.classifier)
                result.update({k: torch.tensor(v) for k, v in diag.items()})
        return result

    def end_epoch(self) -> None:
        """Move the epoch means of J_m and J_gen into the schedules (call once per epoch)."""
        self.hardness.end_epoch()
        self.synthetic_weight.end_epoch()

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, edges={self.edges!r}, "
                f"k={self.k}, mixing={self.mixing!r}, negatives_per_class={self.negatives_per_class!r}")
