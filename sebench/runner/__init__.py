"""Executes the runs a spec expands into: what is missing runs, what was interrupted resumes, what finished
is skipped. One concern a module:

    plan.py   the runs, their status in the store, --only, reuse of another experiment's identical run
    locks.py  one runner per run (lock files, stale-lock takeover)
    pool.py   worker processes for --jobs N (one GPU each, or a share of the CPU threads)
    sweep.py  run_sweep and execute_one: a plan executed under the locks, with progress
Cost estimates are sebench.estimate's; launchers on top are sebench.launch (torchrun) and sebench.slurm.
"""

from sebench.runner.locks import acquire_lock, release_lock
from sebench.runner.plan import (PlanRow, find_reusable, labels_text, log_plan, parse_only, plan, reuse_identical,
                                 run_status, todo_rows, with_execution)
from sebench.runner.pool import Interrupted, assign_gpus, make_pools, visible_gpus
from sebench.runner.sweep import (SweepResult, check_amp, check_data_parallel, check_data_paths, execute_one,
                                  print_failures, run_sweep)

__all__ = ["Interrupted", "PlanRow", "SweepResult", "acquire_lock", "assign_gpus", "check_amp", "check_data_parallel",
           "check_data_paths", "execute_one", "find_reusable", "labels_text", "log_plan", "make_pools", "parse_only",
           "plan", "print_failures", "release_lock", "reuse_identical", "run_status", "run_sweep", "todo_rows",
           "visible_gpus", "with_execution"]
