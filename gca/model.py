"""``GCAHNG``: GCA-HNG's objective, the phase losses of METHOD 2.6 around a :class:`gca.GCAGenerator`.

The generator (graph, propagation, heads, synthesis settings) is what a user swaps and reuses; this module
holds what turns its output into training signals: the metric loss, the label-preservation classifier, the
hardness and synthetic-weight schedules and the loss weights. It implements :class:`gca.objective.Objective`.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gca._checks import check_label_range
from gca._precision import full_precision
from gca.diagnostics import generator_diagnostics
from gca.generator import GCAGenerator, Generation
from gca.losses.compat import resolve_synthetic_gradient
from gca.losses.generator import diversity_loss, hardness_loss, label_preservation_loss
from gca.losses.npair import NPairLoss
from gca.losses.synthetic import synthetic_metric_loss
from gca.schedules import HardnessSchedule, SyntheticWeightSchedule

__all__ = ["GCAHNG", "Generation"]


class GCAHNG(nn.Module):
    r"""Globally Correlation-Aware Hard Negative Generation (Peng et al., IJCV 2025).

    The objective of GCA-HNG around a :class:`gca.GCAGenerator` (``self.generator``): the metric loss, the
    label-preservation classifier, the two epoch-level schedules and the loss weights. It exposes the losses of
    the three phases of METHOD 2.6 (:class:`gca.objective.Objective`) and never steps an optimiser itself:

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
        generator: a :class:`gca.GCAGenerator` (or a module with its interface) to use; by default one is
            built from the generator arguments below, which must then be left at their defaults.
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
        memory_size, memory_k: a cross-batch memory of the last ``memory_size`` embeddings, ``memory_k``
            entries of other classes joined to each anchor (:mod:`gca.memory`; 0: none); refreshed by
            :meth:`end_step`.
        diagnostics: in training mode, :meth:`generator_losses` also returns the ``diag_*`` values of
            :func:`gca.diagnostics.generator_diagnostics` (how hard, class-preserving and varied the
            synthetics are).
    """

    trains_generator = True

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        *,
        generator: Optional[nn.Module] = None,
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
        memory_size: int = 0,
        memory_k: int = 16,
    ):
        super().__init__()
        if generator is None:
            generator = GCAGenerator(embedding_dim, num_classes, num_layers=num_layers, heads=heads, layer=layer,
                                     dropout=dropout, layer_kwargs=layer_kwargs, edges=edges, k=k,
                                     self_loops=self_loops, per_channel=per_channel,
                                     negatives_per_class=negatives_per_class, mixing=mixing,
                                     symmetric_edges=symmetric_edges, memory_size=memory_size,
                                     memory_k=memory_k)
        elif (generator.embedding_dim, generator.num_classes) != (embedding_dim, num_classes):
            raise ValueError(f"the generator was built for D={generator.embedding_dim} and "
                             f"{generator.num_classes} classes, the objective for D={embedding_dim} and {num_classes}")
        self.generator = generator
        self.embedding_dim, self.num_classes = embedding_dim, num_classes
        self.softmax_factor, self.hardness_weight = softmax_factor, hardness_weight
        self.diversity_weight, self.classifier_weight = diversity_weight, classifier_weight
        self.node_loss_weight, self.synthetic_loss_mode = node_loss_weight, synthetic_loss_mode
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.metric_loss = metric_loss if metric_loss is not None else NPairLoss()
        self.synthetic_gradient = resolve_synthetic_gradient(self.metric_loss, synthetic_loss_mode, synthetic_gradient)
        self.hardness = HardnessSchedule(alpha, scale=schedule_scale)
        self.synthetic_weight = SyntheticWeightSchedule(beta, scale=schedule_scale)
        self.diagnostics = diagnostics

    # ----------------------------------------------------------------------------------- parameters
    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """The GNN and its heads (the authors' ``opt_gnn``)."""
        return self.generator.parameters_to_train()

    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        """The label-preservation classifier (the authors' ``opt_s``)."""
        return self.classifier.parameters()

    def metric_loss_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the metric loss (proxies of Proxy-Anchor, for example): they belong with the
        embedding network's optimiser."""
        return self.metric_loss.parameters() if isinstance(self.metric_loss, nn.Module) else iter(())

    def schedule_factors(self) -> Dict[str, float]:
        return {"gamma": float(self.hardness.factor()), "synthetic_weight": float(self.synthetic_weight.factor())}

    # ----------------------------------------------------------------------------------- forward
    def generate(self, embeddings: Tensor, labels: Tensor, *, detach_lambda: bool = False,
                 generator: Optional[torch.Generator] = None, anchor_gradient: bool = True) -> Generation:
        """One generator pass at the current hardness (``generator`` is a ``torch.Generator`` for the
        random draws, torch's naming)."""
        return self.generator(embeddings, labels, self.hardness.factor(), detach_lambda=detach_lambda,
                              anchor_gradient=anchor_gradient, generator=generator)

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
        return self._metric_parts(embeddings, labels, out)

    def _metric_parts(self, embeddings: Tensor, labels: Tensor, out: Generation) -> Dict[str, Tensor]:
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
        return self._generator_parts(z, labels, self.generate(z, labels, generator=generator))

    def _generator_parts(self, z: Tensor, labels: Tensor, out: Generation) -> Dict[str, Tensor]:
        with full_precision(z.device):
            j_soft = label_preservation_loss(self.classifier, out.synthetics)
            j_sim = hardness_loss(z, out.synthetics)
            # only the edges that fed the synthetics (with negatives_per_class="one", the chosen ones); sharded
            # by edges, this process's (its anchors' edges), the spread summed over the processes
            used = out.own_synthetics.edge_ids
            j_div = diversity_loss(out.lam[used], out.graph.edge_index[1, used], z.shape[0], reduce=out.reduce)
            j_gen = 0.5 * (self.softmax_factor * j_soft + self.hardness_weight * j_sim + self.diversity_weight * j_div)
        result = {"total": j_gen, "label": j_soft, "hardness": j_sim, "diversity": j_div,
                  "num_synthetics": torch.tensor(len(out.synthetics))}
        if self.training:
            self.synthetic_weight.update(j_gen)
            if self.diagnostics:
                graph = out.graph
                # sharded by edges: the diagnostics of this process's anchors (a share of the batch)
                diag = generator_diagnostics(z, graph.y, graph.edge_index, out.lam, out.own_synthetics,
                                             self.classifier, memory=graph.x[graph.num_batch:])
                result.update({k: torch.tensor(v) for k, v in diag.items()})
        return result

    # ----------------------------------------------------------------------------------- fused A + C
    def fused_losses(self, embeddings: Tensor, labels: Tensor,
                     generator: Optional[torch.Generator] = None) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """Phases A and C from one propagation (the fused step, :func:`gca.train.train_step` with
        ``fused=True``): returns ``(metric_parts, generator_parts)`` as :meth:`metric_losses` and
        :meth:`generator_losses` do, to be backpropagated together once.

        The graph is built and propagated once, from ``sg(z)``. Phase A's synthetics mix the attached
        embeddings with ``sg(lambda)``, so ``J_m + w_syn J_syn`` trains the embedding network (and the metric
        loss's proxies) exactly as in phase A; phase C's mix ``sg(z)`` with ``lambda``, so ``J_gen`` trains the
        GNN exactly as in phase C. Both read the same propagation, so ``J_gce`` trains the GNN but, unlike
        the two-pass step, does not reach the embedding network: routing it there would also route phase
        C's gradient into the embeddings (or cost a second backward sweep through the GNN, the work this
        step exists to save). The differences to the two-pass step are listed in :func:`gca.train.train_step`.
        """
        if not (hasattr(self.generator, "propagate") and hasattr(self.generator, "synthesize")):
            raise TypeError(f"the fused step needs a generator with propagate() and synthesize() (as "
                            f"gca.GCAGenerator); {type(self.generator).__name__} has not both")
        z = embeddings.float()
        z_detached = z.detach()
        propagation = self.generator.propagate(z_detached, labels)
        gamma = self.hardness.factor()
        metric_side = self.generator.synthesize(z, labels, propagation, gamma, detach_lambda=True,
                                                anchor_gradient=self.synthetic_gradient == "full",
                                                generator=generator)
        generator_side = self.generator.synthesize(z_detached, labels, propagation, gamma, generator=generator)
        return (self._metric_parts(embeddings, labels, metric_side),
                self._generator_parts(z_detached, labels, generator_side))

    def end_epoch(self) -> None:
        """Move the epoch means of J_m and J_gen into the schedules (call once per epoch)."""
        self.hardness.end_epoch()
        self.synthetic_weight.end_epoch()

    def end_step(self, embeddings: Tensor, labels: Tensor) -> None:
        """Refresh the generator's cross-batch memory with the step's batch (nothing without one)."""
        remember = getattr(self.generator, "remember", None)
        if remember is not None:
            remember(embeddings, labels)

    def extra_repr(self) -> str:
        return (f"alpha={self.hardness.alpha}, beta={self.synthetic_weight.beta}, "
                f"synthetic_loss_mode={self.synthetic_loss_mode!r}, synthetic_gradient={self.synthetic_gradient!r}")
