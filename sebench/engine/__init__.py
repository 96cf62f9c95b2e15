"""Training engine: fit/evaluate, optimizers and schedules, checkpoint/resume."""

from sebench.engine.fit import fit
from sebench.engine.loop import RunFailed, evaluate, train_epoch
from sebench.engine.optim import build_optimizer, build_scheduler

__all__ = ["RunFailed", "build_optimizer", "build_scheduler", "evaluate", "fit", "train_epoch"]
