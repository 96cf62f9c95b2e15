"""Optional Weights & Biases mirror of what the store records. The store stays the single source of truth:
this reads run directories (and the report built from them) and copies them to W&B; it never trains or
measures.

    LiveMirror(spec, profile, results, enabled=...)  # `sebench run --wandb`: each epoch while the runs train
    mirror_run(run_dir, ...) -> Path | None          # one run's epochs, summary, excitation histograms
    mirror_table(spec, profile, results, ...)        # a complete table's paired deltas (run table-<spec>-<profile>)
    mirror_report(profile, tables, plots, ...)       # `sebench report --wandb`
    sync_offline(dir="wandb") -> list[Path]          # `sebench wandb-sync`
    read_transaction_log(path) -> [Record]           # what an offline run holds (tests, debugging)

- One W&B run per sebench run, with the run_id as its W&B id (resume="allow"): live logging, the sweep that
  resumes an interrupted run and a later mirror_run (`sebench analyze --wandb`) all continue it. Offline,
  each of them writes its own folder wandb/offline-run-<time>-<run_id>; `wandb sync` uploads a run's
  folders in order into the one W&B run. A history step is an epoch (step = epoch, and define_metric puts
  "epoch" on the charts' x axis); an epoch W&B already has (found in the local run folders of that id, and
  online at the server's resume step) is not logged again.
- wandb is imported only inside these functions, and only in the process that mirrors (the sweep's parent:
  training processes never import it). `pip install sebench[wandb]`.
- Mode: `mode` when given, else $WANDB_MODE, else "online" when an API key is set ($WANDB_API_KEY or a netrc
  entry for the W&B host) and "offline" when none is: offline runs are uploaded later by `sebench wandb-sync`.
- Where: W&B writes under `<dir>/wandb/`. The default `dir` is the results root's parent, so the runs land in
  `wandb/` beside `results/` (git-ignored).
- A W&B failure of any kind (not installed, init refused, a bad record) warns once per process and returns
  None; it never stops a run. After an import or init failure, later calls return None at once.
- The API key is never passed, logged or written by this module: values equal to it are redacted before
  anything is logged, and W&B reads the key from its own environment/netrc.
"""

from sebench.tracking.core import (api_key_available, base_url, default_dir, flatten, logged_so_far,
                                   read_transaction_log, resolve_mode)
from sebench.tracking.live import LiveMirror
from sebench.tracking.runs import (arm_text, excitation_by_stage, mirror_report, mirror_run, mirror_table,
                                   table_run_id)
from sebench.tracking.sync import offline_runs, sync_offline

__all__ = ["LiveMirror", "api_key_available", "arm_text", "base_url", "default_dir",
           "excitation_by_stage", "flatten", "logged_so_far", "mirror_report", "mirror_run", "mirror_table",
           "offline_runs", "read_transaction_log", "resolve_mode", "sync_offline", "table_run_id"]
