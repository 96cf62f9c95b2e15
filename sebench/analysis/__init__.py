"""Excitation recording and the paper's excitation-distribution figures (Hu et al., "Role of Excitation").

:mod:`sebench.analysis.excitation` records and summarises gate values; :mod:`sebench.analysis.figures`
draws them (matplotlib is imported only there).
"""

from sebench.analysis.excitation import (
    ExcitationRecorder, ExcitationStats, analyze, paper_blocks, record, resolve_blocks)

__all__ = ["ExcitationRecorder", "ExcitationStats", "analyze", "paper_blocks", "record", "resolve_blocks"]
