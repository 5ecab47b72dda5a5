"""What does GCA-HNG cost?  One command, every figure measured side by side in one run.

Usage::

    python benchmarks/cost.py                 # the full benchmark (about 36 minutes on 2 CPU cores)
    python benchmarks/cost.py --quick         # smoke run (CI): tiny sizes, one repeat
    python benchmarks/cost.py --out DIR --device cuda --max-memory-gb 16 --repeats 5

Every configuration runs in a fresh child process (``forkserver`` by default: a clean process that has
only imported the libraries; ``--start-method spawn`` for a fully fresh interpreter), so its peak memory
can be read in isolation: on CPU the rise of the child's peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the runs minus before them, model and inputs already
built), on CUDA ``torch.cuda.max_memory_allocated`` minus the memory allocated before the runs.

Suites (the ``suite`` field of every row in ``cost.json``):

``environment``      versions, threads, CPU model, allocator settings, load average (one row).
``matmul``           this machine's ``torch.matmul`` throughput (2048 x 2048 fp32), at the start and the end,
                     and the latency of one small scatter (a probe of how busy the machine is).
``generator_step``   time and memory of GCA-HNG's per-iteration work on a batch of embeddings, against B:
                     phase A (``metric_losses`` with ``z`` requiring grad, backward) + phase C
                     (``generator_losses``, backward) = the "generator step"; phase A alone is the
                     "metric-side step". Full graph and k-nearest-neighbour graphs, L = 1 and 2.
``fast_paths``       the same step with the library's optimisations switched off one at a time:
                     ``symmetric_edges`` (one edge state per unordered pair) and ``GCAEdgeConv(fast=...)``.
``propagation``      forward + backward of the propagation network alone: PyG message passing against the
                     plain dense PyTorch reference (``gca.testing.dense.dense_propagation``), same weights; and
                     with / without torch-scatter where it is installed.
``threads``          the generator step with the default thread settings, one thread, and
                     ``OMP_WAIT_POLICY=PASSIVE`` (fresh ``spawn`` processes), to show how much a busy machine
                     costs.
``backbone``         a whole training step with an image backbone: baseline (forward, N-pair, backward, AdamW
                     step) against GCA-HNG's three-phase step (:func:`gca.train.step.train_step`).
``profile``          ``torch.profiler`` of one generator step at the authors' CUB batch (B = 81 = 27 x 3,
                     L = 2, H = 4): the operators where the time goes.
``large_batch``      the generator step on the knn graph at B = 2048 and 4096, and the knn search alone at
                     4096 with its score budget and as one B x B block (its own peak memory).
``steps``            one whole ``train_step`` with its optimisers at B = 81 and 162 (L = 2, H = 4): the plain
                     reference paths, the two-pass step, the fused step and the fused step without
                     recomputation, alternating in rounds (:mod:`costbench.steps`).
``compile``          the same step eager against ``torch.compile`` of the propagation blocks (inductor), the
                     compile time apart from the steady-state step (:mod:`costbench.compile_suite`).

Outputs in ``--out`` (default ``benchmarks/results``): ``cost.json`` (a list of rows), ``cost.md``
(Markdown tables) and ``cost_time_vs_batch.png``, ``cost_memory_vs_batch.png``, ``cost_pyg_vs_dense.png``.

Sizes grow until one of three limits: the estimated peak memory of the next size exceeds
``--max-memory-gb`` (estimated from the previous size of the same line, scaled by the number of edges);
the previous size's step took longer than ``--time-cap`` seconds; or the run's time budget
(``--budget-min``, shared out between the suites) would be exceeded. Every size not measured is recorded
as a ``skipped`` row with its reason.

The package is run by ``benchmarks/cost.py``: as a script, it has ``benchmarks/`` on ``sys.path`` (so the
package imports as ``costbench``, in the children too) and it adds the repository root:

:mod:`costbench.harness`    the child-process runner, peak-memory and timing helpers, the environment probe.
:mod:`costbench.workloads`  the ``work_*`` functions the children run, one configuration each.
:mod:`costbench.suites`     the ``suite_*`` functions that choose and run the configurations, and their budgets.
:mod:`costbench.steps`      the ``steps`` suite: its workload, suite and report section.
:mod:`costbench.compile_suite`  the ``compile`` suite, likewise.
:mod:`costbench.report`     ``cost.md`` (summary lines and tables) and the plots, from the rows.
:mod:`costbench.cli`        the options and ``main``.
"""
