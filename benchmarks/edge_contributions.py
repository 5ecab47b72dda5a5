"""What self-loops and same-class edges contribute to GCA's node update, and what their last edge update is for.

No synthetic is mixed from a self-loop or a same-class edge (:func:`gca.synthesis.candidate_edges`), yet every
GCA layer updates their edge states. Those states reach the results in two ways only: the edge-to-node message of
the next layer's node update (layers 1..L-1), and the batch statistics of the lambda head's BatchNorm (the last
layer, in training mode). This script measures, for the default GCA layer on the full batch graph:

(a) the share of the edge-to-node message that comes from them: per node, the norm of the summed messages of its
    incoming self/same-class edges over the norm of the summed messages of all its incoming edges (mean over the
    nodes, per layer);
(b) how much the node states and lambda (on the negative edges) change when their messages are dropped from the
    edge-to-node aggregation (relative L2 change);
(c) whether the last layer's edge update of those edges changes anything but the lambda head's BatchNorm
    statistics: lambda on the negative edges with and without their last-layer update, in training mode (batch
    statistics) and in eval mode (running statistics). "Without" is either dropping their rows before the lambda
    head (the BatchNorm then sees the negative edges only) or keeping their previous-layer states;
(d) the share of the edges they make up, and of the forward FLOPs their last-layer edge update costs.

Settings: random (i.i.d. Gaussian) and clustered (class centres plus noise, L2-normalised, as a trained embedding)
embeddings at B = 81 = 27 x 3, D = 512, L = 2, H = 4 (the authors' CUB setting) and B = 64 = 32 x 2, D = 64,
L = 1, H = 4 (the Omniglot config); a freshly initialised generator whose lambda-head running statistics were
first filled by training-mode passes, dropout off. Means over ``--seeds`` seeds.

Usage::

    python benchmarks/edge_contributions.py [--out /tmp/edge_contrib] [--seeds 3]

Writes ``edge_contributions.md`` (and ``.json``) in ``--out`` and prints the table.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode
from torch_geometric.utils import scatter

from gca.generator import GCAGenerator
from gca.graph import build_batch_graph
from gca.synthesis import candidate_edges

#: name -> (B, K samples per class, D, L, H)
SETTINGS = {"CUB-like B=81": (81, 3, 512, 2, 4), "Omniglot B=64": (64, 2, 64, 1, 4)}
EMBEDDINGS = ("random", "clustered")
BN_WARMUP_PASSES = 20


def embeddings(kind: str, batch: int, per_class: int, dim: int, seed: int) -> Tuple[Tensor, Tensor]:
    """A batch of ``batch // per_class`` classes x ``per_class`` samples: i.i.d. Gaussian, or class centres plus
    noise on the unit sphere (positives closer than negatives, as after training)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(batch // per_class).repeat(per_class)
    if kind == "random":
        return torch.randn(batch, dim, generator=g), labels
    centres = F.normalize(torch.randn(batch // per_class, dim, generator=g), dim=1)
    z = centres[labels] + 0.6 * torch.randn(batch, dim, generator=g) / dim ** 0.5
    return F.normalize(z, dim=1), labels


def _relative(changed: Tensor, reference: Tensor) -> float:
    return float((changed - reference).norm() / reference.norm())


def _lambda(head, edge_states: Tensor, train: bool) -> Tensor:
    """The lambda head on ``edge_states`` with batch statistics (``train``) or running ones, on a copy, so that
    the measurements leave the running statistics alone."""
    head = copy.deepcopy(head).train(train)
    with torch.no_grad():
        return head(edge_states).float()


class Propagation:
    """The generator's propagation run block by block on the directed edges (the library's default keeps one
    state per unordered pair; the values are the same, checked against :meth:`GCAGenerator.propagate`), with the
    self/same-class messages optionally dropped."""

    def __init__(self, generator: GCAGenerator, z: Tensor, labels: Tensor):
        self.generator = generator
        self.graph = build_batch_graph(z, labels, "full", None, True)
        self.same = self.graph.same_class          # self-loops included
        self.target = self.graph.edge_index[1]     # the edge-to-node message goes to the target

    @torch.no_grad()
    def run(self, drop_messages: bool = False) -> Dict[str, Any]:
        """Node states and edge states after every layer, and the message shares of (a)."""
        blocks = self.generator.propagation.layers
        graph, n = self.graph, self.graph.num_nodes
        keep = (~self.same).to(graph.edge_attr.dtype).unsqueeze(1)
        h, e = self.generator.propagation.input_proj(graph.x), graph.edge_attr
        edges, shares = [e], []
        for block in blocks:
            messages = F.gelu(block.node.edge_to_node(e))
            total = scatter(messages, self.target, 0, dim_size=n, reduce="sum")
            own = scatter(messages * (1 - keep), self.target, 0, dim_size=n, reduce="sum")
            shares.append(float((own.norm(dim=1) / total.norm(dim=1)).mean()))
            # a zero pre-activation is a zero message (GELU(0) = 0): the masked edges send nothing
            hook = (block.node.edge_to_node.register_forward_hook(lambda _m, _i, out: out * keep)
                    if drop_messages else None)
            h = block.node(h, graph.edge_index, e, self.same)
            if hook is not None:
                hook.remove()
            e = block.edge(h, graph.edge_index, e)
            edges.append(e)
        return {"h": h, "edges": edges, "shares": shares}


def fill_running_statistics(generator: GCAGenerator, setting: Tuple[int, int, int, int, int], kind: str,
                            seed: int) -> None:
    """Training-mode passes of the lambda head over other batches, so that its running statistics are those of
    the edge states (eval mode then normalises as a trained model does)."""
    batch, per_class, dim, _, _ = setting
    generator.lambda_head.train()
    with torch.no_grad():
        for i in range(BN_WARMUP_PASSES):
            z, y = embeddings(kind, batch, per_class, dim, 10_000 + 100 * seed + i)
            generator.lambda_head(Propagation(generator, z, y).run()["edges"][-1])


def edge_flops(generator: GCAGenerator, z: Tensor, labels: Tensor) -> Dict[str, float]:
    """Forward FLOPs (matrix products) of the library's default propagation and of each layer's edge update."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        generator.propagate(z, labels)
    counts = {name: sum(by_op.values()) for name, by_op in counter.get_flop_counts().items()}
    last = f"GraphPropagation.layers.{len(generator.propagation.layers) - 1}.edge"
    # the per-edge products of the last edge update (its key, value and node projections run per node)
    per_edge = counts[f"{last}.ffn_in"] + counts[f"{last}.ffn_out"]
    return {"total": float(counts["Global"]), "last_edge_update": float(counts[last]),
            "last_edge_per_edge": float(per_edge), "lambda_head": float(counts["ChannelWeightHead"])}


def measure(name: str, kind: str, seed: int) -> Dict[str, float]:
    """Every figure of one setting, one kind of embeddings and one seed."""
    setting = SETTINGS[name]
    batch, per_class, dim, layers, heads = setting
    torch.manual_seed(seed)
    generator = GCAGenerator(dim, batch // per_class, num_layers=layers, heads=heads, dropout=0.0).eval()
    fill_running_statistics(generator, setting, kind, seed)
    z, y = embeddings(kind, batch, per_class, dim, seed)
    prop = Propagation(generator, z, y)
    full, dropped = prop.run(), prop.run(drop_messages=True)
    negative = candidate_edges(y, prop.graph.edge_index)
    head = generator.lambda_head
    lam = {train: _lambda(head, full["edges"][-1], train) for train in (True, False)}

    # the block-by-block run is the library's propagation (per pair, BN weighted per directed edge)
    generator.lambda_head.train()
    reference = copy.deepcopy(generator).train()
    reference.propagation.eval()
    with torch.no_grad():
        library = reference.propagate(z, y)
    torch.testing.assert_close(library.node_states, full["h"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(library.lam, lam[True], rtol=1e-4, atol=1e-4)

    out: Dict[str, float] = {}
    for layer, share in enumerate(full["shares"]):
        out[f"message_share_l{layer + 1}"] = share
    out["node_change"] = _relative(dropped["h"], full["h"])
    for train in (True, False):
        mode = "train" if train else "eval"
        lam_dropped = _lambda(head, dropped["edges"][-1], train)
        out[f"lambda_change_messages_{mode}"] = _relative(lam_dropped[negative], lam[train][negative])
        # (c) no last-layer update for them: their rows left out of the lambda head, or their previous states kept
        lam_rows = _lambda(head, full["edges"][-1][negative], train)
        stale = torch.where(prop.same.unsqueeze(1), full["edges"][-2], full["edges"][-1])
        lam_stale = _lambda(head, stale, train)
        out[f"lambda_change_skip_rows_{mode}"] = _relative(lam_rows, lam[train][negative])
        out[f"lambda_change_skip_stale_{mode}"] = _relative(lam_stale[negative], lam[train][negative])
        out[f"lambda_maxdiff_skip_rows_{mode}"] = float((lam_rows - lam[train][negative]).abs().max())

    # (d) edges and FLOPs
    e_directed = prop.graph.edge_index.shape[1]
    same_directed = int(prop.same.sum())
    src, dst = prop.graph.edge_index
    pairs = src <= dst
    out["edge_share_directed"] = same_directed / e_directed
    out["edge_share_pairs"] = int((prop.same & pairs).sum()) / int(pairs.sum())
    flops = edge_flops(copy.deepcopy(generator).eval(), z, y)
    out["last_edge_update_flop_share"] = flops["last_edge_update"] / flops["total"]
    # skipping their last update saves its per-edge products on their rows, and the lambda head's on the same rows
    out["saved_flop_share"] = (out["edge_share_pairs"] * (flops["last_edge_per_edge"] + flops["lambda_head"])
                               / flops["total"])
    out["gflop_forward"] = flops["total"] / 1e9
    return out


def table(results: Dict[str, Dict[str, Dict[str, float]]]) -> List[str]:
    """The Markdown table: one column per (setting, embeddings), one row per figure."""
    columns = [(name, kind) for name in results for kind in results[name]]
    rows = [("(a) message share, layer 1", "message_share_l1", "{:.1%}"),
            ("(a) message share, layer 2", "message_share_l2", "{:.1%}"),
            ("(b) node states change, messages dropped", "node_change", "{:.2%}"),
            ("(b) lambda change, messages dropped (train BN)", "lambda_change_messages_train", "{:.2%}"),
            ("(b) lambda change, messages dropped (eval BN)", "lambda_change_messages_eval", "{:.2%}"),
            ("(c) lambda change, last update skipped, rows left out (train BN)", "lambda_change_skip_rows_train",
             "{:.3%}"),
            ("(c) lambda change, last update skipped, rows left out (eval BN)", "lambda_change_skip_rows_eval",
             "{:.1e}"),
            ("(c) max abs lambda difference, rows left out (eval BN)", "lambda_maxdiff_skip_rows_eval", "{:.1e}"),
            ("(c) lambda change, last update skipped, previous states kept (train BN)",
             "lambda_change_skip_stale_train", "{:.3%}"),
            ("(c) lambda change, last update skipped, previous states kept (eval BN)",
             "lambda_change_skip_stale_eval", "{:.1e}"),
            ("(d) share of directed edges", "edge_share_directed", "{:.1%}"),
            ("(d) share of edge states (one per unordered pair, the default)", "edge_share_pairs", "{:.1%}"),
            ("(d) last edge update's share of the forward FLOPs", "last_edge_update_flop_share", "{:.1%}"),
            ("(d) forward FLOPs saved: their last edge MLP and lambda-head rows", "saved_flop_share", "{:.2%}"),
            ("forward GFLOP (propagation and heads)", "gflop_forward", "{:.2f}")]
    out = ["| figure | " + " | ".join(f"{name}, {kind}" for name, kind in columns) + " |",
           "|---|" + "---:|" * len(columns)]
    for label, key, fmt in rows:
        cells = [fmt.format(results[name][kind][key]) if key in results[name][kind] else "–"
                 for name, kind in columns]
        if any(c != "–" for c in cells):
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/edge_contrib"), help="output folder")
    p.add_argument("--seeds", type=int, default=3, help="seeds averaged (generator weights and embeddings)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be at least 1, got {args.seeds}")
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    for name in SETTINGS:
        results[name] = {}
        for kind in EMBEDDINGS:
            runs = [measure(name, kind, seed) for seed in range(args.seeds)]
            results[name][kind] = {key: statistics.mean(r[key] for r in runs) for key in runs[0]}
    batch_note = ", ".join(f"{name}: B={b} ({b // k} x {k}), D={d}, L={n}, H={h}"
                           for name, (b, k, d, n, h) in SETTINGS.items())
    lines = ["# Self-loops and same-class edges in the GCA layer", "",
             f"Default GCA layer, full batch graph, dropout off, a freshly initialised generator ({batch_note}); "
             f"means over {args.seeds} seeds. Changes are relative L2 norms over the negative (synthesis) edges' "
             "lambda or all node states. Produced by `benchmarks/edge_contributions.py`.", ""] + table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "edge_contributions.md").write_text("\n".join(lines) + "\n")
    (args.out / "edge_contributions.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
