"""Command line: ``gca train``, ``gca eval``, ``gca compare`` and ``gca prepare``.

    gca train --config omniglot solver.epochs=8 gca.layer=gatv2
    gca compare --config omniglot                 # baseline and GCA-HNG, same seed and budget
    gca eval --checkpoint runs/omniglot_gca/best.pt
    gca prepare cub200 CUB_200_2011.tgz data/

Bad input (a config key, an override, a data folder, a checkpoint) ends in one line on stderr,
``gca <command>: error: <message>``, and exit status 2. Set the environment variable ``GCA_DEBUG=1`` to get
the full traceback instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

METRIC_COLUMNS = ("R@1", "R@2", "R@4", "R@8", "MAP@R", "R-Precision")


def _threads() -> None:
    import torch
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))


def _train(args) -> int:
    from gca.train import Trainer, load_config
    _threads()
    cfg = load_config(args.config, args.overrides)
    trainer = Trainer(cfg, progress=not args.no_progress)
    if args.resume:
        resumed = trainer.resume(args.resume if args.resume != "auto" else None)
        if trainer.writes:
            print(f"[gca] {'resumed from' if resumed else 'no checkpoint to resume in'} {trainer.run_dir}")
    result = trainer.fit()
    if trainer.writes:      # under torchrun: rank 0 only
        print(json.dumps(result, indent=2))
    return 0


def format_table(rows: List[dict], columns: Sequence[str] = METRIC_COLUMNS) -> str:
    """Markdown table of result dicts with a ``method`` key; metrics shown as percentages."""
    present = [c for c in columns if any(c in r for r in rows)]
    lines = ["| method | " + " | ".join(present) + " |", "|---|" + "---:|" * len(present)]
    for r in rows:
        cells = [f"{100 * r[c]:.2f}" if c in r else "" for c in present]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _compare(args) -> int:
    """Train the baseline (GCA-HNG off) and GCA-HNG with the same config, seed and budget."""
    from gca.train import Trainer, load_config
    _threads()
    rows = []
    base = load_config(args.config, args.overrides)
    for method, enabled in (("baseline", "false"), ("+ GCA-HNG", "true")):
        name = f"{base.name}_{'gca' if enabled == 'true' else 'baseline'}"
        cfg = load_config(args.config, list(args.overrides) + [f"gca.enabled={enabled}", f"name={name}"])
        trainer = Trainer(cfg, progress=not args.no_progress)
        if trainer.writes:
            print(f"[gca] training {cfg.name} ({method}) ...", flush=True)
        if args.resume:
            trainer.resume()
        result = trainer.fit()
        rows.append({"method": f"{cfg.loss.metric} {method}", **result})
    if not trainer.writes:      # under torchrun: rank 0 writes and prints the comparison
        return 0
    table = format_table(rows)
    out = Path(base.output_dir) / f"{base.name}_comparison.md"
    budget = f"{base.solver.epochs} epochs" + (
        f", at most {base.solver.max_steps} steps" if base.solver.max_steps else "")
    out.write_text(f"# {base.data.dataset}: test classes (never seen in training), seed {base.seed}, {budget}\n\n"
                   f"{table}\n")
    print(f"\n{base.data.dataset}, unseen test classes, seed {base.seed}, {budget} "
          "(checkpoint chosen on validation):\n")
    print(table)
    print(f"\n(written to {out})")
    return 0


def _eval(args) -> int:
    from gca.train import Trainer
    from gca.train.checkpoint import load_checkpoint
    from gca.train.config import RunConfig, _from_dict, _set_override, validate
    _threads()
    ckpt = load_checkpoint(args.checkpoint, required=("config", "model"))
    tree = ckpt["config"]
    for override in args.overrides:
        _set_override(tree, override)
    tree["output_dir"] = str(Path(args.checkpoint).resolve().parent.parent)
    cfg = _from_dict(RunConfig, tree, "")
    validate(cfg)
    trainer = Trainer(cfg, progress=not args.no_progress)
    trainer.load_model_weights(ckpt["model"], source=args.checkpoint)
    metrics = trainer.test_metrics()
    print(json.dumps(metrics, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gca", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, help_text in (("train", _train, "train one config"),
                                ("compare", _compare, "train the baseline and GCA-HNG side by side")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", required=True, help="a YAML file or the name of a packaged config")
        p.add_argument("overrides", nargs="*", help="section.key=value overrides")
        p.add_argument("--resume", nargs="?", const="auto", default=None,
                       help="continue from the run's last.pt (or the given checkpoint)")
        p.add_argument("--no-progress", action="store_true")
        p.set_defaults(func=fn)
    p = sub.add_parser("eval", help="evaluate a checkpoint on the test classes")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("overrides", nargs="*", help="section.key=value overrides (e.g. data.root=...)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_eval)
    # listed for --help; main() hands "gca prepare ..." straight to gca.data.prepare
    sub.add_parser("prepare", help="turn a downloaded archive into the layout the loaders read "
                                   "(gca prepare --help for its options)", add_help=False)
    return parser


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line."""
    text = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    text = str(text)
    if "Original Traceback" in text:
        # re-raised from a DataLoader worker: the last line is the original "module.Error: message"
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return text or type(exc).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["prepare"]:
        # everything after "prepare" belongs to gca.data.prepare's own parser (options included)
        from gca.data.prepare import main as prepare_main
        return prepare_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as exc:
        if os.environ.get("GCA_DEBUG", "") not in ("", "0"):
            raise
        print(f"gca {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
