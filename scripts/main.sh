#!/usr/bin/env bash
# The main job, from nothing: sets up .venv if needed, then trains the strongest baseline of the quality
# benchmark, Proxy-Anchor (alpha 16, chosen on validation classes), and Proxy-Anchor + GCA-HNG (the scale-free
# schedules chosen on validation classes) on Omniglot, same seed and budget (about 10 minutes on a 2-core CPU),
# and prints both results side by side. Extra arguments are config overrides, e.g.
# `bash scripts/main.sh loss.metric=npair loss.metric_kwargs={}` for the paper's base loss.
source "$(dirname "$0")/env.sh"
# large tensor allocations are slow with glibc's default thresholds on this kind of machine
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-4294967296}" MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-4294967296}"
# OpenMP threads that spin while waiting make every small op many times slower when another process shares the
# cores (benchmarks/results/cost.md measured 10.7 s against 1.9 s per generator step); export it as ACTIVE to opt out
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
gca compare --resume --config omniglot deterministic=true loss.metric=proxy_anchor loss.metric_kwargs.alpha=16 \
    gca.schedule_scale=first_epoch gca.alpha=1 gca.beta=1 "$@"
