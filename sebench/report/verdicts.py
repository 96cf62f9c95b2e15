"""What the data can say about a comparison: every verdict of the results tables and the claims ledger is
defined here, once (the tests behind them are in sebench.report.stats).

A paired comparison is the per-seed differences d_1..d_n of one metric (variant - baseline, same seed), in
one table; the table is the family for multiplicity. With n pairs, mean m, SD s and df = n - 1:

- n < 3 (MIN_PAIRS): "no verdict (n < 3)". Two pairs give an interval on one degree of freedom (t = 12.7)
  whose width comes from two differences that can happen to agree; no test is run.
- Against zero: a two-sided paired t test of m = 0, Holm-adjusted across the table's comparisons (every
  metric's). "better" / "worse" (by the metric's direction: lower error or loss, higher accuracy) when the
  adjusted p < ALPHA, which is when the adjusted interval (stats.holm_levels) excludes 0.
- Equivalence: TOST (two one-sided t tests) against +-margin, Holm-adjusted across the table's comparisons
  that have a margin: "equivalent within ±m" when the adjusted p < ALPHA. The margin is DEFAULT_MARGINS
  unless the spec declares `equivalence_margin` (per metric, in the metric's units).
- Against the source's delta S (where the source has both numbers and S != 0): a two-sided t test of m = S,
  Holm-adjusted across the table's comparisons with a source delta. "reproduced" when the test against zero
  rejects on S's side (the source's direction holds; "smaller/larger than the source" added when the test of
  m = S rejects too); "contradicts the source" when the test of m = S rejects with our mean on the zero side
  of S or beyond it (the source's delta is ruled out and its direction is not shown).
- Otherwise "inconclusive (MDE x)": x is the minimum detectable effect, the true difference a two-sided
  paired t test at ALPHA with these n pairs and this SD detects with POWER (before adjustment).

The verdict of a comparison is the first of: no verdict (n < 3); its verdict against the source if that is
reproduced or contradicts; better / worse; equivalent; inconclusive (MDE).
Tables with 3 or more arms also get an omnibus test over seeds (Friedman), beside the per-arm verdicts, never
gating them. Claims that are not paired deltas (the excitation analysis's rank correlation of specificity
with depth) are judged on their own test's p, Holm-adjusted across the profile's analyses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from sebench.report.stats import (holm, holm_levels, mean_std, minimum_detectable_effect, paired_t_pvalue,
                                  pairs_needed, t_interval, tost_pvalue)

ALPHA = 0.05  # every test's level (two-sided), family-wise within a table after Holm
POWER = 0.80  # for the minimum detectable effect and the seeds needed
MIN_PAIRS = 3  # fewer paired seeds than this: no verdict
PAIRS_CAP = 10_000  # the seeds-needed search stops here (">10000")
# The equivalence margin, stated once: half a percentage point of error or accuracy. It is the size of the
# statement results/README.md used to make ("no design move is worth more than about half a point") and
# of the source's effects on CIFAR (the SE paper's smallest Table 4 gain is 0.39 points; 2304.06502's Table 1
# deltas are 0.06-0.45). Metrics in other units (test loss) get no equivalence test unless the spec
# declares a margin for them (`equivalence_margin: {test_loss: 0.01}`).
DEFAULT_MARGINS: dict[str, float] = {"top1_err": 0.5, "top5_err": 0.5, "top1_acc": 0.5, "top5_acc": 0.5}

BETTER, WORSE, EQUIVALENT = "better", "worse", "equivalent"
REPRODUCED, CONTRADICTS = "reproduced", "contradicts the source"
INCONCLUSIVE, NO_VERDICT, NOT_TESTED = "inconclusive", "no verdict (n < 3)", "not tested"
DIFFER = "arms differ"  # omnibus
KINDS = (REPRODUCED, CONTRADICTS, BETTER, WORSE, EQUIVALENT, INCONCLUSIVE, NO_VERDICT, NOT_TESTED)
DECISIVE = (REPRODUCED, CONTRADICTS, BETTER, WORSE, EQUIVALENT)

RULES = [
    f"no verdict (n < 3): fewer than {MIN_PAIRS} paired seeds; no test is run",
    f"better / worse: the paired t test against 0 rejects at {ALPHA:g} after Holm's adjustment across the "
    "table's comparisons (the adjusted interval excludes 0); by the metric's direction (lower error or loss, "
    "higher accuracy)",
    "equivalent within ±m: TOST against ±m rejects at "
    f"{ALPHA:g} after Holm's adjustment; m = {DEFAULT_MARGINS['top1_err']:g} percentage points for error and "
    "accuracy unless the spec declares `equivalence_margin` (test loss: only where declared)",
    "reproduced: the test against 0 rejects on the source's side (+ 'smaller/larger than the source' when the "
    "source's Δ is excluded as well)",
    "contradicts the source: the t test of Δ = source Δ rejects (Holm-adjusted) with our Δ on the zero side "
    "of the source's or beyond",
    f"inconclusive (MDE x): none of these; x = the minimum detectable effect, the true Δ a two-sided paired t "
    f"test at {ALPHA:g} with these n pairs and this SD detects with {POWER:.0%} power",
    "a comparison's verdict is the first that applies of: no verdict; reproduced / contradicts; better / "
    "worse; equivalent; inconclusive",
]


@dataclass(frozen=True)
class Verdict:
    kind: str  # one of KINDS (or DIFFER for an omnibus test)
    text: str  # as a table prints it: the kind, with its margin, MDE or size note

    def __str__(self) -> str:
        return self.text

    @property
    def decisive(self) -> bool:
        return self.kind in DECISIVE


@dataclass(frozen=True)
class Question:
    """One paired comparison to judge."""

    diffs: tuple[float, ...]  # variant - baseline, one per paired seed
    higher_is_better: bool = False
    source_delta: Optional[float] = None  # the source's variant - baseline, same metric
    margin: Optional[float] = None  # equivalence margin in the metric's units (None: no TOST)
    decimals: int = 2  # how the metric is printed (the MDE in a verdict)


@dataclass(frozen=True)
class Judgement:
    n: int
    mean: float
    sd: float
    df: int
    low: Optional[float]  # raw 95% t interval
    high: Optional[float]
    adj_level: float  # the level Holm tests this comparison against 0 at (NaN: not tested)
    adj_low: Optional[float]  # the t interval at 1 - adj_level: excludes 0 exactly when Holm rejects
    adj_high: Optional[float]
    p_zero: float
    p_zero_adj: float
    p_equiv: float
    p_equiv_adj: float
    p_source: float
    p_source_adj: float
    margin: Optional[float]
    mde: float  # at 80% power, this n and SD
    pairs_for_source: Optional[int]  # seeds to detect the source's delta (None: > PAIRS_CAP or no delta)
    vs_zero: Verdict
    vs_source: Optional[Verdict]  # None where the source gives no delta
    verdict: Verdict


def margin_for(metric: str, declared: Optional[Mapping[str, float]] = None) -> Optional[float]:
    """The equivalence margin of a metric: the spec's `equivalence_margin`, else DEFAULT_MARGINS."""
    declared = declared or {}
    return declared.get(metric, DEFAULT_MARGINS.get(metric))


def fmt(x: Optional[float], decimals: int, sign: bool = True) -> str:
    """A number as the tables print it: rounded first, so float noise never prints as -0.00."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    v = round(x, decimals) or 0.0
    return f"{v:+.{decimals}f}" if sign else f"{v:.{decimals}f}"


def pairs_text(judgement: Judgement) -> str:
    """Seeds needed to detect the source's delta, as the ledger prints it."""
    if judgement.vs_source is None or math.isnan(judgement.sd) or judgement.sd <= 0:
        return "-"
    return str(judgement.pairs_for_source) if judgement.pairs_for_source is not None else f">{PAIRS_CAP}"


def _inconclusive(q: Question, mde: float, why: str = "") -> Verdict:
    if why:
        return Verdict(INCONCLUSIVE, f"{INCONCLUSIVE} ({why})")
    return Verdict(INCONCLUSIVE, f"{INCONCLUSIVE} (MDE {fmt(mde, q.decimals, sign=False)})"
                   if not math.isnan(mde) else INCONCLUSIVE)


def judge_family(questions: Sequence[Question], alpha: float = ALPHA) -> list[Judgement]:
    """Verdicts for one table's comparisons (the family for Holm's adjustment), in the order given."""
    stats = [mean_std(list(q.diffs)) for q in questions]
    eligible = [n >= MIN_PAIRS for _, _, n in stats]
    p0 = [paired_t_pvalue(q.diffs) if ok else math.nan for q, ok in zip(questions, eligible)]
    pe = [tost_pvalue(q.diffs, q.margin) if ok and q.margin else math.nan for q, ok in zip(questions, eligible)]
    ps = [paired_t_pvalue(q.diffs, q.source_delta) if ok and q.source_delta else math.nan
          for q, ok in zip(questions, eligible)]
    p0_adj, pe_adj, ps_adj, levels = holm(p0), holm(pe), holm(ps), holm_levels(p0, alpha)
    out = []
    for i, q in enumerate(questions):
        m, sd, n = stats[i]
        sd = sd if n > 1 else math.nan
        low, high = t_interval(q.diffs, 1 - alpha) if n > 1 else (None, None)
        adj_low, adj_high = (t_interval(q.diffs, 1 - levels[i]) if not math.isnan(levels[i]) else (None, None))
        mde = minimum_detectable_effect(sd, n, alpha, POWER) if n > 1 else math.nan
        has_source = q.source_delta is not None and not math.isnan(q.source_delta) and q.source_delta != 0
        needed = pairs_needed(q.source_delta, sd, alpha, POWER, PAIRS_CAP) if has_source and n > 1 else None
        if n == 0:
            vs_zero = verdict = Verdict(NOT_TESTED, NOT_TESTED)
            vs_source = Verdict(NOT_TESTED, NOT_TESTED) if has_source else None
        elif n < MIN_PAIRS:
            vs_zero = verdict = Verdict(NO_VERDICT, NO_VERDICT)
            vs_source = Verdict(NO_VERDICT, NO_VERDICT) if has_source else None
        elif math.isnan(p0[i]):  # no spread: every seed's difference the same (stats.paired_delta)
            vs_zero = verdict = _inconclusive(q, mde, "equal per-seed differences, no interval")
            vs_source = verdict if has_source else None
        else:
            rejects_zero = p0_adj[i] < alpha
            if rejects_zero:
                good = (m > 0) == q.higher_is_better
                vs_zero = Verdict(BETTER if good else WORSE, BETTER if good else WORSE)
            elif q.margin and pe_adj[i] < alpha:
                vs_zero = Verdict(EQUIVALENT, f"{EQUIVALENT} within ±{fmt(q.margin, q.decimals, sign=False)}")
            else:
                vs_zero = _inconclusive(q, mde)
            vs_source = None
            if has_source:
                s = q.source_delta
                rejects_source = ps_adj[i] < alpha
                if rejects_zero and (m > 0) == (s > 0):
                    size = "" if not rejects_source else (" (smaller than the source)" if abs(m) < abs(s)
                                                          else " (larger than the source)")
                    vs_source = Verdict(REPRODUCED, REPRODUCED + size)
                elif rejects_source and (m - s) * s < 0:
                    vs_source = Verdict(CONTRADICTS, CONTRADICTS)
                else:
                    vs_source = _inconclusive(q, mde)
            if vs_source is not None and vs_source.decisive:
                verdict = vs_source
            elif vs_zero.decisive:
                verdict = vs_zero
            else:
                verdict = _inconclusive(q, mde)
        out.append(Judgement(n=n, mean=m, sd=sd, df=max(n - 1, 0), low=low, high=high, adj_level=levels[i],
                             adj_low=adj_low, adj_high=adj_high, p_zero=p0[i], p_zero_adj=p0_adj[i],
                             p_equiv=pe[i], p_equiv_adj=pe_adj[i], p_source=ps[i], p_source_adj=ps_adj[i],
                             margin=q.margin, mde=mde, pairs_for_source=needed, vs_zero=vs_zero,
                             vs_source=vs_source, verdict=verdict))
    return out


def omnibus_verdict(p: float, blocks: int, alpha: float = ALPHA) -> Verdict:
    """An omnibus test over seeds (Friedman): whether the table's arms differ anywhere. Beside the per-arm
    verdicts, never gating them."""
    if blocks < MIN_PAIRS:
        return Verdict(NO_VERDICT, NO_VERDICT)
    if math.isnan(p):
        return Verdict(INCONCLUSIVE, INCONCLUSIVE)
    if p < alpha:
        return Verdict(DIFFER, f"{DIFFER} (p < {alpha:g})")
    return Verdict(INCONCLUSIVE, f"{INCONCLUSIVE} (no difference shown)")


def judge_correlations(rhos: Sequence[float], pvalues: Sequence[float], ns: Sequence[int],
                       expected_sign: Sequence[int], alpha: float = ALPHA) -> list[tuple[float, Verdict]]:
    """Rank-correlation claims (one family): (Holm-adjusted p, verdict) each. The source claims the sign
    `expected_sign` (+1: rises); reproduced when the adjusted p < alpha on that side, contradicts on the
    other, inconclusive otherwise; no verdict with fewer than 3 points."""
    ps = [p if n >= MIN_PAIRS else math.nan for p, n in zip(pvalues, ns)]
    adj = holm(ps)
    out = []
    for rho, p_adj, n, sign in zip(rhos, adj, ns, expected_sign):
        if n < MIN_PAIRS:
            out.append((p_adj, Verdict(NO_VERDICT, NO_VERDICT)))
        elif not math.isnan(p_adj) and p_adj < alpha:
            same = (rho > 0) == (sign > 0)
            out.append((p_adj, Verdict(REPRODUCED, REPRODUCED) if same else Verdict(CONTRADICTS, CONTRADICTS)))
        else:
            out.append((p_adj, Verdict(INCONCLUSIVE, INCONCLUSIVE)))
    return out
