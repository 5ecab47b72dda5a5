"""What the generator is doing: how hard, how class-preserving and how varied its synthetic negatives are.

:func:`generator_diagnostics` reads one generator pass (no gradient, a few ``B x B`` operations) and returns
plain floats that the trainer averages per epoch into ``metrics.jsonl`` and ``diagnostics.png`` draws:

* ``diag_lambda_mean``: the mean of lambda over the edges that feed synthesis;
* ``diag_lambda_channel_std``: its spread across channels (std over D, averaged over edges): near 0 when the
  generator has collapsed to one scalar per pair;
* ``diag_lambda_negative_std``: its spread across one anchor's negatives (std over an anchor's candidate
  edges, per channel, averaged): near 0 when every negative of an anchor is treated alike;
* ``diag_cos_synthetic`` and ``diag_cos_hardest_real``: the mean cosine of an anchor to its synthetics and to
  its hardest (most similar) real negative;
* ``diag_harder_than_real``: the share of synthetics more similar to their anchor than every real negative of
  that anchor;
* ``diag_unchanged``: the share of candidate negatives left as they are because ``d- <= d+`` (already harder
  than the positive), for which lambda does nothing;
* ``diag_label_accuracy``: the share of synthetics the label-preservation classifier assigns to the class they
  are labelled with (their negative's class).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter

from gca.synthesis import Synthetics, batch_positive_distance, candidate_edges


@torch.no_grad()
def generator_diagnostics(embeddings: Tensor, labels: Tensor, edge_index: Tensor, lam: Tensor,
                          synthetics: Synthetics, classifier: Optional[nn.Module] = None,
                          memory: Optional[Tensor] = None) -> Dict[str, float]:
    """Diagnostics of one generator pass (see the module docstring for each key).

    With a cross-batch memory, ``memory`` holds the entries that joined the graph (nodes ``B..N-1``, their
    labels in ``labels[B:]``): they count as candidates and as real negatives, never as anchors.

    Shapes:
        embeddings ``[B, D]``, labels ``[N]``, edge_index ``[2, E]`` (row 1 the anchor), lam ``[E, D]`` or
        ``[E, 1]``, synthetics of ``S`` rows, memory ``[N - B, D]`` -> a dict of floats
    """
    z, lam = embeddings.detach().float(), lam.detach().float()
    b = z.shape[0]
    if memory is not None and memory.shape[0]:
        z = torch.cat([z, memory.detach().float()])
    labels_all, labels = labels, labels[:b]
    used = candidate_edges(labels_all, edge_index, num_anchors=b)
    out: Dict[str, float] = {}
    if used.any():
        lam_used, anchor = lam[used], edge_index[1, used]
        out["diag_lambda_mean"] = float(lam_used.mean())
        out["diag_lambda_channel_std"] = float(lam_used.std(dim=1, unbiased=False).mean()) \
            if lam_used.shape[1] > 1 else 0.0
        count = torch.bincount(anchor, minlength=b).clamp_min(1).unsqueeze(1).float()
        mean = scatter(lam_used, anchor, dim=0, dim_size=b, reduce="sum") / count
        var = scatter((lam_used - mean[anchor]).pow(2), anchor, dim=0, dim_size=b, reduce="sum") / count
        has = torch.bincount(anchor, minlength=b) > 0
        out["diag_lambda_negative_std"] = float(var[has].sqrt().mean())
        d_pos = batch_positive_distance(z, labels_all, b)
        # from the Gram matrix: no [M, D] temporaries while the step's graph is alive
        gram = z @ z.T
        squared = gram.diagonal()
        source = edge_index[0, used]
        d_neg = (squared[source] + squared[anchor] - 2 * gram[source, anchor]).clamp_min(0).sqrt()
        out["diag_unchanged"] = float((d_neg <= d_pos[anchor]).float().mean())
    if len(synthetics):
        zn = F.normalize(z, dim=1)
        cos_real = zn[:b] @ zn.T                 # each anchor against every real sample of the graph
        cos_real = cos_real.masked_fill(labels.unsqueeze(1) == labels_all.unsqueeze(0), -2.0)
        hardest = cos_real.max(dim=1).values[synthetics.anchor_index]
        cos_syn = (F.normalize(synthetics.embeddings.detach().float(), dim=1) * zn[synthetics.anchor_index]).sum(1)
        out["diag_cos_synthetic"] = float(cos_syn.mean())
        out["diag_cos_hardest_real"] = float(hardest.mean())
        # a margin, so that a synthetic equal to the hardest real negative (lambda = gamma = 1) is not counted
        out["diag_harder_than_real"] = float((cos_syn > hardest + 1e-5).float().mean())
        if classifier is not None:
            logits = classifier(synthetics.embeddings.detach().to(next(classifier.parameters()).dtype))
            out["diag_label_accuracy"] = float((logits.argmax(1) == synthetics.labels).float().mean())
    return out
