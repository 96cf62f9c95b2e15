"""Excitation recording and the paper's excitation-distribution figures (Hu et al., "Role of Excitation").

:mod:`sebench.analysis.excitation` records and summarises gate values; :mod:`sebench.analysis.figures`
draws them (matplotlib is imported only there); :mod:`sebench.analysis.run` runs the study on a model
(``analyze``) and on a trained run of the store (``analyze_run``, ``sebench analyze``).
"""

from sebench.analysis.excitation import ExcitationRecorder, ExcitationStats, paper_blocks, record, resolve_blocks
from sebench.analysis.run import RunAnalysis, analyze, analyze_run

__all__ = ["ExcitationRecorder", "ExcitationStats", "RunAnalysis", "analyze", "analyze_run", "paper_blocks",
           "record", "resolve_blocks"]
