"""The claims ledger: every distinct comparison the suite has measured, once, with what the data can say about
it, across profiles and specs.

    sebench claims   (make claims)
    -> results/CLAIMS.md, results/claims.csv, results/claims.png

Where the numbers come from: each profile's consolidated run table (results/<profile>/runs.csv, read through
report.data.gather as `sebench report` reads it) and the excitation analyses committed in run folders
(runs/<experiment>/<run_id>/analysis/excitation_summary.csv). Nothing is typed in.

What a row is:

- a paired comparison of a results table (variant − same-recipe baseline, one metric, paired by seed), or of
  two profiles that repeat each other's runs with one recipe change, precision or schedule length
  (report.pairing.profile_pair): each row of the pair, and each effect of the spec's table in both profiles,
  i.e. whether the change alters it (a difference in differences, paired by seed). A
  comparison that several tables report (the ablation tables share their no-SE and standard-SE runs) is one
  row: two comparisons are the same when their arms are the same recipes for the same seeds
  (store.recipe_key), whichever experiment trained or adopted them; the row names every table.
- an omnibus test (Friedman over seeds) of a table with 3 or more arms, beside its per-arm rows.
- a claim that is not a paired delta: the rank correlation of class specificity with depth in an excitation
  analysis, with its own test and p.

Verdicts come from report.verdicts (the tables' verdict column reads the same functions); each table is the
family for Holm's adjustment (its comparisons against a second baseline, where it has one, another family).
Stand-in profiles (report.data.STAND_IN_PROFILES) get a section of their own.

Machines: a pair of runs is on the same machine when both records name the same CPU model and the same ISA
(the bracket of `device_name`, e.g. "AMD EPYC [avx512_bf16]"; a GPU's name is exact); a record without the
bracket has an unknown ISA, which matches nothing: such a pair is "unknown" when the models agree, "mixed" when
they do not. Each paired row gives its pairs' machine counts and, beside the pooled estimate, the estimate
over its same-machine pairs only.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from sebench.errors import UserError
from sebench.report.data import (METRICS, STAND_IN_PROFILES, Comparison, ReportData, arm_labels, effect_label,
                                 gather, precision_name, read_runs_csv)
from sebench.report.pairing import ProfilePair, effect_changes, pair_comparisons, profile_pair
from sebench.report.excitation import SUMMARY, read_summary
from sebench.report.stats import friedman, paired_delta, spearman_exact, spearman_replicated
from sebench.report.tables import judge_table
from sebench.report.verdicts import (ALPHA, DEFAULT_MARGINS, EQUIVALENT, INCONCLUSIVE, KINDS, MIN_PAIRS, POWER,
                                     RULES, Judgement, Question, Verdict, fmt, judge_correlations, judge_family,
                                     margin_for, omnibus_verdict, pairs_text)
from sebench.store import atomic_write_text, recipe_key

SAME, MIXED, UNKNOWN = "same", "mixed", "unknown"
LEDGER_MD, LEDGER_CSV, LEDGER_PNG = "CLAIMS.md", "claims.csv", "claims.png"

CSV_COLUMNS = [
    "id", "section", "kind", "profile", "table", "also_in", "claim", "metric", "unit", "source", "source_delta",
    "n", "delta", "ci_low", "ci_high", "sd", "df", "p_zero", "p_zero_holm", "adj_level", "adj_low", "adj_high",
    "margin", "p_equiv", "p_equiv_holm", "p_source", "p_source_holm", "vs_zero", "vs_source", "mde",
    "seeds_for_source", "pairs_same", "pairs_mixed", "pairs_unknown", "mixed_seeds", "unknown_seeds",
    "same_n", "same_delta", "same_low", "same_high", "statistic", "statistic_value", "test", "p", "p_holm",
    "verdict_kind", "verdict", "seeds", "runs", "quote",
]


# ---- the records' facts (the one place this module reads run fields) ---------------------------------------

@dataclass(frozen=True)
class Machine:
    kind: str  # "cpu", "cuda", ...; "" when not recorded
    model: str  # CPU model or GPU name
    isa: Optional[str]  # the CPU's widest recorded extension; None: not recorded (unknown)


def run_facts(run) -> dict:
    """What the ledger reads of a run (a report.data.Run): identity, provenance, machine, precision, data."""
    row = run.row
    return {"run_id": row.get("run_id") or "", "experiment": row.get("experiment") or "",
            "reused_from": row.get("reused_from") or "", "device": row.get("device") or "",
            "device_name": row.get("device_name") or "", "amp": row.get("amp") or "",
            "dataset": row.get("dataset") or ""}


_ISA = re.compile(r"^(?P<model>.*?)\s*\[(?P<isa>[^\]]+)\]\s*$")


def machine_of(device: str, device_name: str) -> Machine:
    """'AMD EPYC [avx512_bf16]' -> cpu, 'AMD EPYC', 'avx512_bf16'; 'AMD EPYC' -> ISA unknown (records before
    the device name carried it). A GPU is named exactly by its device name."""
    device = (device or "").split(":")[0]
    name = (device_name or "").strip()
    if isinstance(device_name, float):  # NaN from runs.csv
        name = ""
    if device and device != "cpu":
        return Machine(device, name, name or None)
    m = _ISA.match(name)
    if m:
        return Machine(device or "cpu", m["model"], m["isa"])
    return Machine(device or "cpu", name, None)


def machine_match(a: Machine, b: Machine) -> str:
    """same: same model and ISA; mixed: different models, devices or ISAs; unknown: same model, an ISA not
    recorded on either side (or no record at all)."""
    if not a.model or not b.model:
        return UNKNOWN
    if a.kind != b.kind or a.model != b.model:
        return MIXED
    if a.isa is None or b.isa is None:
        return UNKNOWN
    return SAME if a.isa == b.isa else MIXED


# ---- claims ------------------------------------------------------------------------------------------------

@dataclass
class Claim:
    id: str
    kind: str  # "paired", "omnibus", "correlation"
    profile: str
    table: str  # the spec (or spec_vs_profile) whose table reports it
    title: str
    claim: str  # in words
    stand_in: bool
    short: str = ""  # the claim in a few words (the forest plot's label)
    metric: str = ""
    unit: str = ""
    decimals: int = 2
    source: str = ""  # what the source says, in words, for claims without a source delta
    source_delta: Optional[float] = None
    source_text: str = ""
    judgement: Optional[Judgement] = None
    seeds: list[int] = field(default_factory=list)
    pairs: dict[str, list[int]] = field(default_factory=dict)  # SAME / MIXED / UNKNOWN -> seeds
    same_only: Optional[object] = None  # stats.PairedDelta over the same-machine pairs
    runs: list[str] = field(default_factory=list)  # experiment/run_id of every run behind it
    also_in: list[str] = field(default_factory=list)
    key: Optional[tuple] = None  # what makes two tables' comparisons the same claim
    arms: Optional[tuple] = None  # (variant's recipes, baseline's recipes, sign of the metric)
    # claims that are not paired deltas (and omnibus tests)
    statistic: str = ""
    statistic_value: Optional[float] = None
    test: str = ""
    n: int = 0
    p: float = math.nan
    p_holm: float = math.nan
    verdict: Optional[Verdict] = None

    @property
    def final(self) -> Verdict:
        return self.judgement.verdict if self.judgement is not None else self.verdict

    def delta_text(self) -> str:
        j = self.judgement
        if j is None or j.n == 0:
            return "-"
        if j.low is None:
            return f"{fmt(j.mean, self.decimals)} (no interval)"
        return f"{fmt(j.mean, self.decimals)} [{fmt(j.low, self.decimals)}, {fmt(j.high, self.decimals)}]"

    def quote(self) -> str:
        """How results/README.md and README.md quote this row (tests/test_claims.py checks each quote)."""
        if self.kind == "paired":
            return f"{self.delta_text()} (n={self.judgement.n}, {self.final.text}; ledger `{self.id}`)"
        p = _p(self.p)
        p = f"p {p[0]} {p[1:]}" if p.startswith("<") else f"p = {p}"
        if self.kind == "correlation":
            return f"ρ = {fmt(self.statistic_value, 2)}, {p} (n={self.n}, {self.final.text}; ledger `{self.id}`)"
        return f"{self.statistic} = {self.statistic_value:.2f}, {p} (n={self.n}, {self.final.text}; ledger `{self.id}`)"


def _p(p: float) -> str:
    if p is None or math.isnan(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_.]+", "-", str(text).lower()).strip("-")


def _precision(amps) -> str:
    return "/".join(sorted({precision_name(a) for a in amps})) or "fp32"


def _datasets(facts: list[dict]) -> str:
    """The runs' data labels, each once, in order."""
    return "; ".join(dict.fromkeys(f["dataset"] for f in facts if f["dataset"]))


def _quantity(metric: str) -> tuple[str, int]:
    """Metrics that measure the same thing with opposite signs: accuracy = 100 - error."""
    if metric.endswith("_acc"):
        return metric.replace("_acc", ""), -1
    if metric.endswith("_err"):
        return metric.replace("_err", ""), 1
    return metric, 1


def _recipe_ids(data: ReportData, combo, runs: dict, seeds: list[int]) -> tuple:
    """Each paired seed's recipe (store.recipe_key of the spec's RunConfig for it), or, for a run the spec no
    longer expands to, the run it carries (reused_from) or itself."""
    expected = {rc.seed: rc for rc in data.expected.get(combo, [])}
    out = []
    for s in seeds:
        facts = run_facts(runs[s])
        rc = expected.get(s)
        if rc is not None and rc.run_id == facts["run_id"]:
            out.append((s, recipe_key(rc)))
        else:
            out.append((s, "run:" + (facts["reused_from"] or f"{facts['experiment']}/{facts['run_id']}")))
    return tuple(out)


def _machines(comp: Comparison) -> dict[str, list[int]]:
    out = {SAME: [], MIXED: [], UNKNOWN: []}
    for s in comp.seeds:
        a, b = run_facts(comp.variant_runs[s]), run_facts(comp.baseline_runs[s])
        out[machine_match(machine_of(a["device"], a["device_name"]),
                          machine_of(b["device"], b["device_name"]))].append(s)
    return out


def _paired_claim(comp: Comparison, j: Judgement, *, data: ReportData, other: Optional[ReportData], cid: str,
                  text: str, short: str, table: str, title: str, profile: str) -> Claim:
    pairs = _machines(comp)
    same = pairs[SAME]
    same_only = paired_delta({s: comp.variant[s] for s in same}, {s: comp.baseline[s] for s in same})
    arm_data = other or data
    key_a = _recipe_ids(data, comp.combo, comp.variant_runs, comp.seeds)
    key_b = _recipe_ids(arm_data, comp.base, comp.baseline_runs, comp.seeds)
    runs = sorted({f"{run_facts(r)['experiment']}/{run_facts(r)['run_id']}"
                   for s in comp.seeds for r in (comp.variant_runs[s], comp.baseline_runs[s])})
    return Claim(id=cid, kind="paired", profile=profile, table=table, title=title, claim=text, short=short,
                 stand_in=profile in STAND_IN_PROFILES or (other is not None and other.profile in STAND_IN_PROFILES),
                 metric=comp.metric, unit=_unit(comp.metric), decimals=METRICS[comp.metric][3],
                 source_delta=comp.source_delta, source_text=comp.source_text or "", judgement=j, seeds=comp.seeds,
                 pairs=pairs, same_only=same_only, runs=runs,
                 key=(_quantity(comp.metric)[0], frozenset({key_a, key_b})) if comp.seeds else None,
                 arms=(key_a, key_b, _quantity(comp.metric)[1]))


def _unit(metric: str) -> str:
    return {"test_loss": "loss"}.get(metric, "points of accuracy" if metric.endswith("_acc") else "points of error")


def _table_claims(data: ReportData) -> list[Claim]:
    judged = judge_table(data)
    claims = []
    for comp, j in judged + judge_table(data, second=True):
        if comp.pending or not comp.seeds:  # not measured: the table says "not tested"; no claim yet
            continue
        variant, base, context = arm_labels(data, comp)
        runs = [r for s in comp.seeds for r in (comp.variant_runs[s], comp.baseline_runs[s])] or \
            list(comp.variant_runs.values()) + list(comp.baseline_runs.values())
        facts = [run_facts(r) for r in runs]
        where = ", ".join(x for x in ([context] if context else []) + [
            _datasets(facts) or "no runs",
            data.profile, _precision(f["amp"] for f in facts)])
        text = f"{variant} vs {base}, {where}: {METRICS[comp.metric][0]}"
        cid = "/".join([data.profile, data.spec.name] + ([slug(context)] if context else []) +
                       [f"{slug(variant)}-vs-{slug(base)}", comp.metric])
        short = f"{variant} vs {base}" + (f" ({context})" if context else "")
        claims.append(_paired_claim(comp, j, data=data, other=None, cid=cid, text=text, short=short,
                                    table=data.spec.name, title=data.spec.title, profile=data.profile))
    claims += _omnibus_claims(data, judged)
    return claims


def _omnibus_claims(data: ReportData, judged) -> list[Claim]:
    """Friedman over the seeds every arm has, for each group of 3 or more arms sharing a baseline."""
    groups: dict[tuple, list[Comparison]] = {}
    for comp, _ in judged:
        if not comp.pending:
            groups.setdefault((comp.metric, comp.base), []).append(comp)
    out = []
    for (metric, base), comps in groups.items():
        if len(comps) < 2:
            continue
        arms = [comps[0].baseline] + [c.variant for c in comps]
        seeds = sorted(set.intersection(*(set(a) for a in arms)))
        blocks = [[a[s] for a in arms] for s in seeds]
        stat, df, p = friedman(blocks) if len(blocks) >= 2 else (math.nan, len(arms) - 1, math.nan)
        context = " / ".join(label for i, label in enumerate(base) if i != data.delta_axis)
        cid = "/".join([data.profile, data.spec.name] + ([slug(context)] if context else []) + ["omnibus", metric])
        arm_names = [base[data.delta_axis]] + [c.combo[data.delta_axis] for c in comps]
        text = (f"any difference among the {len(arms)} arms ({', '.join(arm_names)})"
                + (f" in {context}" if context else "") + f", {data.profile}: {METRICS[metric][0]}")
        out.append(Claim(id=cid, kind="omnibus", profile=data.profile, table=data.spec.name, title=data.spec.title,
                         claim=text, stand_in=data.profile in STAND_IN_PROFILES, metric=metric, unit=_unit(metric),
                         decimals=METRICS[metric][3], statistic="Friedman χ²", statistic_value=stat,
                         test=f"Friedman over {len(seeds)} seeds (blocks), df {df}", n=len(seeds), p=p, p_holm=p,
                         seeds=seeds, verdict=omnibus_verdict(p, len(seeds))))
    return out


def _pair_claims(spec, pair: ProfilePair) -> list[Claim]:
    """The paired table's rows (each arm: changed − reference profile) and its effect rows (does the change
    alter the variant − baseline effect), one Holm family: the table's."""
    a, b = pair.changed, pair.reference
    comps = pair_comparisons(a, b)
    changes = effect_changes(a, b)
    margins = spec.equivalence_margin
    judged = judge_family([Question(diffs=c.diffs, higher_is_better=c.higher_is_better,
                                    margin=margin_for(c.metric, margins), decimals=METRICS[c.metric][3])
                           for c in comps + [e.change for e in changes]])
    table = f"{spec.name}_vs_{b.profile}"
    title = f"{spec.title}: `{a.profile}` paired with `{b.profile}`"
    sides = f"{pair.side(a)} vs {pair.side(b)}"
    out = []
    for comp, j in zip(comps, judged):
        if not comp.seeds:
            continue
        facts = [run_facts(r) for r in list(comp.variant_runs.values()) + list(comp.baseline_runs.values())]
        row = a.short_label(comp.combo)
        dataset = _datasets(facts)
        text = f"{sides}, {row}, {dataset}, {a.profile} vs {b.profile}: {METRICS[comp.metric][0]}"
        cid = "/".join([f"{a.profile}-vs-{b.profile}", spec.name, slug(row), comp.metric])
        out.append(_paired_claim(comp, j, data=a, other=b, cid=cid, text=text, short=f"{sides} ({row})",
                                 table=table, title=title, profile=a.profile))
    for e, j in zip(changes, judged[len(comps):]):
        if not e.change.seeds:
            continue
        variant, base, context = arm_labels(a, e.change)
        facts = [run_facts(r) for c in (e.in_a, e.in_b) for s in e.change.seeds
                 for r in (c.variant_runs[s], c.baseline_runs[s])]
        dataset = _datasets(facts)
        text = (f"{variant} − {base} at {pair.side(a)} minus at {pair.side(b)}, "
                + (f"{context}, " if context else "") + f"{dataset}, {a.profile} vs {b.profile}: "
                f"{METRICS[e.change.metric][0]}")
        cid = "/".join([f"{a.profile}-vs-{b.profile}", spec.name] + ([slug(context)] if context else []) +
                       [f"{slug(variant)}-vs-{slug(base)}", e.change.metric])
        out.append(_effect_change_claim(e, j, a=a, b=b, cid=cid, text=text,
                                        short=f"{effect_label(a, e.change)}: {sides}", table=table, title=title))
    return out


def _effect_change_claim(e, j: Judgement, *, a: ReportData, b: ReportData, cid: str, text: str, short: str,
                         table: str, title: str) -> Claim:
    """A difference in differences: the seed's four runs are one machine's ("same") when each profile's pair
    is; mixed when either pair is; else unknown. Its key is the four arms' recipes, so that two tables
    reporting the same effect (an ablation's SE vs no-SE rows are cifar100_se_vs_baseline's runs) give one row."""
    by_a, by_b = _machines(e.in_a), _machines(e.in_b)
    pairs = {SAME: [], MIXED: [], UNKNOWN: []}
    for s in e.change.seeds:
        kinds = {k for d in (by_a, by_b) for k, seeds in d.items() if s in seeds}
        pairs[MIXED if MIXED in kinds else SAME if kinds == {SAME} else UNKNOWN].append(s)
    c = e.change
    same = pairs[SAME]
    same_only = paired_delta({s: c.variant[s] for s in same}, {s: c.baseline[s] for s in same})
    seeds = c.seeds
    key_av = _recipe_ids(a, c.combo, e.in_a.variant_runs, seeds)
    key_ab = _recipe_ids(a, c.base, e.in_a.baseline_runs, seeds)
    key_bv = _recipe_ids(b, c.combo, e.in_b.variant_runs, seeds)
    key_bb = _recipe_ids(b, c.base, e.in_b.baseline_runs, seeds)
    runs = sorted({f"{run_facts(r)['experiment']}/{run_facts(r)['run_id']}" for x in (e.in_a, e.in_b)
                   for s in seeds for r in (x.variant_runs[s], x.baseline_runs[s])})
    quantity, sign = _quantity(c.metric)
    return Claim(id=cid, kind="paired", profile=a.profile, table=table, title=title, claim=text, short=short,
                 stand_in=a.profile in STAND_IN_PROFILES or b.profile in STAND_IN_PROFILES, metric=c.metric,
                 unit=_unit(c.metric), decimals=METRICS[c.metric][3], judgement=j, seeds=seeds, pairs=pairs,
                 same_only=same_only, runs=runs,
                 key=("effect change", quantity, frozenset({(key_av, key_bv), (key_ab, key_bb)})),
                 arms=((key_av, key_bv), (key_ab, key_bb), sign))


def _excitation_claims(results: Path, facts_by_id: dict[str, dict]) -> list[Claim]:
    """The excitation analysis's claim that the ledger tests (the SE paper's "Role of Excitation": early
    blocks class-agnostic, later ones class-specific): the rank correlation of chance-corrected class
    specificity with block depth, per committed analysis and over the seeds of one recipe where two or more
    of its seeds are analysed (Page's trend test), each kind a Holm family per profile."""
    from sebench.store import read_finished_run

    found = []
    for path in sorted(Path(results).glob(f"runs/*/*/{SUMMARY}")):
        run_id = path.parent.parent.name
        row = facts_by_id.get(run_id)
        if row is None:  # analysed run not in any runs.csv: not collected, so not a claim yet
            continue
        blocks = read_summary(path)
        depth = [int(r["depth_index"]) for r in blocks]
        spec_adj = [float(r["specificity_adj"]) for r in blocks]
        rho, p = spearman_exact(depth, spec_adj)
        try:  # the recipe, seed aside: what the seeds of one pooled row share
            cfg = read_finished_run(path.parent.parent)[0]
            recipe = recipe_key(cfg.model_copy(update={"seed": 0}))
        except UserError:
            recipe = None  # unreadable config: its own row only
        found.append((row, run_id, depth, spec_adj, rho, p, recipe))
    out = []
    for profile in dict.fromkeys(r["profile"] for r, *_ in found):  # Holm across a profile's analyses
        mine = [x for x in found if x[0]["profile"] == profile]
        judged = judge_correlations([x[4] for x in mine], [x[5] for x in mine], [len(x[2]) for x in mine],
                                    [1] * len(mine))
        for (row, run_id, depth, _, rho, p, _), (p_adj, verdict) in zip(mine, judged):
            who = f"{row['experiment']} {_labels(row)}, seed {row['seed']} ({run_id})"
            text = f"class specificity rises with depth over {len(depth)} SE blocks, {who}, {row['dataset']}, {profile}"
            out.append(Claim(id=f"{profile}/{row['experiment']}/{run_id}/specificity-vs-depth",
                             profile=profile, table=row["experiment"], claim=text, short=who,
                             stand_in=profile in STAND_IN_PROFILES, statistic="Spearman ρ", statistic_value=rho,
                             test="Spearman rank correlation of ω² with depth, exact p (all permutations)",
                             n=len(depth), p=p, p_holm=p_adj, verdict=verdict, runs=[f"{row['experiment']}/{run_id}"],
                             **SPECIFICITY_CLAIM))
        out += _excitation_seed_claims(profile, mine)
    return out


# What the per-run and the over-seeds specificity rows share: the SE paper's claim and where it is tested.
SPECIFICITY_CLAIM = dict(kind="correlation", title="Excitation analysis (sebench analyze)",
                         source="rises with depth (SE paper, 'Role of Excitation')")


def _labels(row: dict) -> str:
    return " / ".join(str(v) for k, v in sorted(row.items()) if k.startswith("label.") and v
                      and not (isinstance(v, float) and math.isnan(v)))


def _excitation_seed_claims(profile: str, analyses: list) -> list[Claim]:
    """One row per recipe (store.recipe_key, seed aside, whichever experiment trained each seed) with analyses
    of two or more seeds: do the seeds together show specificity rising with depth? One analysis has only its
    blocks (9 in a ResNet-20), too few to tell a moderate trend from none; the seeds are independent
    replicates of it. As for paired comparisons, fewer than 3 seeds give no verdict: two runs cannot show
    that a pattern is the recipe's."""
    groups: dict[str, dict[int, tuple]] = {}
    for row, run_id, depth, spec_adj, _, _, recipe in analyses:
        if recipe is not None:
            groups.setdefault(recipe, {}).setdefault(int(row["seed"]), (row, run_id, depth, spec_adj))
    recipes = [[by_seed[s] for s in sorted(by_seed)] for by_seed in groups.values() if len(by_seed) >= 2]
    tested = [spearman_replicated(runs[0][2], [x[3] for x in runs]) for runs in recipes]
    judged = judge_correlations([t[0] for t in tested], [t[1] for t in tested], [len(r) for r in recipes],
                                [1] * len(recipes))
    out, ids = [], set()
    for runs, (rho, p), (p_adj, verdict) in zip(recipes, tested, judged):
        row, depth = runs[0][0], runs[0][2]
        experiment, labels = row["experiment"], _labels(row)
        seeds = [int(r["seed"]) for r, *_ in runs]
        who = f"{experiment} {labels}, seeds {', '.join(map(str, seeds))}"
        text = (f"class specificity rises with depth over {len(depth)} SE blocks, in {len(runs)} seeds together, "
                f"{who}, {row['dataset']}, {profile}")
        cid = f"{profile}/{experiment}/{slug(labels) or 'base'}/specificity-vs-depth-over-seeds"
        if cid in ids:  # another recipe with the same labels (a row whose recipe changed): name it by its run
            cid = cid.replace("/specificity-vs-depth-over-seeds", f"-{runs[0][1]}/specificity-vs-depth-over-seeds")
        ids.add(cid)
        out.append(Claim(id=cid, profile=profile, table=experiment, claim=text, short=who,
                         stand_in=profile in STAND_IN_PROFILES, statistic="mean Spearman ρ", statistic_value=rho,
                         test="Page's trend test over the seeds: the sum of each seed's Spearman numerator, exact p "
                         "(convolution of the seeds' permutation distributions)", n=len(runs), p=p, p_holm=p_adj,
                         verdict=verdict, seeds=seeds, runs=[f"{r['experiment']}/{run_id}" for r, run_id, *_ in runs],
                         **SPECIFICITY_CLAIM))
    return out


# ---- the ledger --------------------------------------------------------------------------------------------

@dataclass
class TableInfo:
    profile: str
    table: str
    title: str
    stand_in: bool
    pairs: dict[str, set] = field(default_factory=dict)  # SAME / MIXED / UNKNOWN -> {(seed, run, run)}


@dataclass
class Ledger:
    claims: list[Claim]
    tables: list[TableInfo]
    notes: list[str]

    def by_id(self) -> dict[str, Claim]:
        return {c.id: c for c in self.claims}


def _profile_order(profiles) -> list[str]:
    return sorted(profiles, key=lambda p: (p in STAND_IN_PROFILES, p != "paper", p))


def build_ledger(results: str | Path = "results", folder: str | Path = "experiments",
                 log: Callable[[str], None] = lambda _m: None) -> Ledger:
    """Every comparison of every spec in every profile that has a runs.csv under `results`."""
    from sebench.spec import list_specs, load_spec

    results = Path(results)
    profiles = _profile_order(p.parent.name for p in results.glob("*/runs.csv"))
    if not profiles:
        raise UserError("no consolidated runs in any profile", where=str(results),
                        fix=f"run `sebench collect --results {results}` first (after `sebench run ...`)")
    notes: list[str] = []
    specs = []
    for path in list_specs(folder):
        try:
            specs.append(load_spec(path))
        except UserError as err:
            notes.append(f"skipped {path}: {err}")
    rows_by_profile = {p: read_runs_csv(results, p) for p in profiles}
    facts_by_id = {r["run_id"]: r for p in profiles for r in rows_by_profile[p] if r.get("status") == "finished"}
    claims: list[Claim] = []
    tables: list[TableInfo] = []
    datas: dict[tuple[str, str], ReportData] = {}
    for profile in profiles:
        rows = rows_by_profile[profile]
        finished = {r.get("experiment") for r in rows if r.get("status") == "finished"}
        for spec in sorted(specs, key=lambda s: s.name):
            if profile not in spec.profiles or spec.name not in finished:
                continue
            data = gather(spec, profile, results, rows=rows)
            datas[(spec.name, profile)] = data
            log(f"{profile}: {spec.name}")
            mine = _table_claims(data)
            claims += mine
            tables.append(_table_info(profile, spec.name, spec.title, mine))
    for spec in sorted(specs, key=lambda s: s.name):
        mine_profiles = [p for p in profiles if (spec.name, p) in datas]
        for i, p in enumerate(mine_profiles):
            for q in mine_profiles[i + 1:]:
                pair = profile_pair(datas[(spec.name, p)], datas[(spec.name, q)])
                if pair is None:
                    continue
                mine = _pair_claims(spec, pair)
                if mine:
                    claims += mine
                    tables.append(_table_info(pair.changed.profile, mine[0].table, mine[0].title, mine))
    claims += _excitation_claims(results, facts_by_id)
    claims = _dedupe(claims)
    order = {(t.profile, t.table): i for i, t in enumerate(tables)}
    claims.sort(key=lambda c: (c.stand_in, _profile_order(profiles).index(c.profile) if c.profile in profiles
                               else 99, c.kind == "correlation", order.get((c.profile, c.table), 999)))
    return Ledger(claims=claims, tables=tables, notes=notes)


def _table_info(profile: str, table: str, title: str, claims: list[Claim]) -> TableInfo:
    info = TableInfo(profile=profile, table=table, title=title, stand_in=claims[0].stand_in if claims else
                     profile in STAND_IN_PROFILES, pairs={SAME: set(), MIXED: set(), UNKNOWN: set()})
    for c in claims:
        if c.kind != "paired":
            continue
        for kind, seeds in c.pairs.items():
            for s in seeds:
                info.pairs[kind].add((s, c.id.rsplit("/", 1)[0]))  # one run pair per row and seed, any metric
    return info


def _dedupe(claims: list[Claim]) -> list[Claim]:
    """One row per comparison: the first table (in ledger order) that gives it a source delta keeps it, else
    the first that reports it; the others are named in its also_in."""
    groups: dict[tuple, list[Claim]] = {}
    for c in claims:
        if c.kind == "paired" and c.key is not None:
            groups.setdefault(c.key, []).append(c)
    drop = set()
    for group in groups.values():
        if len(group) < 2:
            continue
        primary = next((c for c in group if c.source_delta is not None), group[0])
        for c in group:
            if c is primary:
                continue
            same = c.judgement.verdict.text == primary.judgement.verdict.text
            flipped = (c.arms[0] != primary.arms[0]) != (c.arms[2] != primary.arms[2])
            note = (f"{c.table} ({c.claim.split(', ')[0]}" + (", the opposite sign" if flipped else "")
                    + ("" if same else f"; there: {c.final.text}") + ")")
            if c.source_delta is not None and c.source_text != primary.source_text:
                note = note[:-1] + f"; there the source's Δ is {c.source_text})"
            if abs(c.judgement.mean - (-1 if flipped else 1) * primary.judgement.mean) > 1e-9:
                note = note[:-1] + f"; its own runs of these recipes give Δ {fmt(c.judgement.mean, c.decimals)})"
            primary.also_in.append(note)
            primary.runs = sorted(set(primary.runs) | set(c.runs))
            drop.add(id(c))
    return [c for c in claims if id(c) not in drop]


# ---- writing ------------------------------------------------------------------------------------------------

def _num(x, decimals: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return repr(round(float(x), decimals)) if isinstance(x, float) else str(x)


def claim_record(c: Claim) -> dict:
    j = c.judgement
    rec = {"id": c.id, "section": "stand-in" if c.stand_in else "claims", "kind": c.kind, "profile": c.profile,
           "table": c.table, "also_in": "; ".join(c.also_in), "claim": c.claim, "metric": c.metric, "unit": c.unit,
           "source": c.source, "source_delta": c.source_text, "verdict_kind": c.final.kind, "verdict": c.final.text,
           "seeds": " ".join(map(str, c.seeds)), "runs": " ".join(c.runs), "quote": c.quote(),
           "statistic": c.statistic, "statistic_value": _num(c.statistic_value), "test": c.test,
           "p": _num(c.p, 6), "p_holm": _num(c.p_holm, 6), "n": c.n}
    if j is not None:
        d = c.decimals + 4
        rec.update(n=j.n, delta=_num(j.mean, d), ci_low=_num(j.low, d), ci_high=_num(j.high, d), sd=_num(j.sd, d),
                   df=j.df, p_zero=_num(j.p_zero, 6), p_zero_holm=_num(j.p_zero_adj, 6),
                   adj_level=_num(j.adj_level, 6), adj_low=_num(j.adj_low, d), adj_high=_num(j.adj_high, d),
                   margin=_num(j.margin), p_equiv=_num(j.p_equiv, 6), p_equiv_holm=_num(j.p_equiv_adj, 6),
                   p_source=_num(j.p_source, 6), p_source_holm=_num(j.p_source_adj, 6), vs_zero=j.vs_zero.text,
                   vs_source=j.vs_source.text if j.vs_source else "", mde=_num(j.mde, d),
                   seeds_for_source=pairs_text(j) if j.vs_source else "",
                   pairs_same=len(c.pairs.get(SAME, [])), pairs_mixed=len(c.pairs.get(MIXED, [])),
                   pairs_unknown=len(c.pairs.get(UNKNOWN, [])),
                   mixed_seeds=" ".join(map(str, c.pairs.get(MIXED, []))),
                   unknown_seeds=" ".join(map(str, c.pairs.get(UNKNOWN, []))))
        if c.same_only is not None and c.same_only.n:
            rec.update(same_n=c.same_only.n, same_delta=_num(c.same_only.mean, d), same_low=_num(c.same_only.low, d),
                       same_high=_num(c.same_only.high, d))
        else:
            rec["same_n"] = 0
    return rec


def ledger_csv(ledger: Ledger) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for c in ledger.claims:
        rec = claim_record(c)
        writer.writerow({k: rec.get(k, "") for k in CSV_COLUMNS})
    return buf.getvalue()


def _md(cells) -> str:
    return "| " + " | ".join(str(x).replace("|", "\\|").replace("\n", " ") for x in cells) + " |"


def _machines_text(c: Claim) -> str:
    parts = []
    for kind, label in ((SAME, "same"), (MIXED, "mixed"), (UNKNOWN, "unknown")):
        seeds = c.pairs.get(kind, [])
        if seeds:
            parts.append(f"{len(seeds)} {label}" + ("" if kind == SAME else
                                                    f" (seed{'s' if len(seeds) > 1 else ''} "
                                                    f"{', '.join(map(str, seeds))})"))
    return ", ".join(parts) or "-"


def _same_text(c: Claim) -> str:
    d = c.same_only
    n = c.judgement.n if c.judgement else 0
    if not n:
        return "-"
    if len(c.pairs.get(SAME, [])) == n:
        return "all pairs"
    if d is None or not d.n:
        return "none"
    if d.low is None:
        return f"{fmt(d.mean, c.decimals)} (n={d.n}, no interval)"
    return f"{fmt(d.mean, c.decimals)} [{fmt(d.low, c.decimals)}, {fmt(d.high, c.decimals)}] (n={d.n})"


def _zero_text(j: Judgement) -> str:
    """The verdict against zero with the Holm-adjusted p of the test that gave it."""
    if j.n < MIN_PAIRS or math.isnan(j.p_zero_adj):
        return j.vs_zero.text
    if j.vs_zero.kind == EQUIVALENT:
        return f"{j.vs_zero.text} (TOST p {_p(j.p_equiv_adj)})"
    kind = j.vs_zero.text if j.vs_zero.kind != INCONCLUSIVE else INCONCLUSIVE
    return f"{kind} (p {_p(j.p_zero_adj)})"


PAIRED_HEAD = ["id", "claim", "source Δ", "Δ [95% CI]", "vs 0, Holm", "n", "SD", "df", "MDE (80%)",
               "seeds for source Δ", "machines (pairs)", "same-machine Δ", "verdict"]
OTHER_HEAD = ["id", "claim", "source", "statistic", "test", "p", "p (Holm)", "n", "verdict"]


def _paired_row(c: Claim) -> list[str]:
    j = c.judgement
    also = f" (also in: {'; '.join(c.also_in)})" if c.also_in else ""
    return [f"`{c.id}`", c.claim + also, c.source_text or "-", c.delta_text(), _zero_text(j), j.n,
            fmt(j.sd, c.decimals, sign=False), j.df if j.n > 1 else "-", fmt(j.mde, c.decimals, sign=False),
            pairs_text(j), _machines_text(c), _same_text(c), f"**{c.final.text}**"]


def _other_row(c: Claim) -> list[str]:
    value = "-" if c.statistic_value is None or math.isnan(c.statistic_value) else (
        fmt(c.statistic_value, 2) if c.kind == "correlation" else f"{c.statistic_value:.2f}")
    return [f"`{c.id}`", c.claim, c.source or "-", f"{c.statistic} = {value}", c.test, _p(c.p),
            _p(c.p_holm) if c.kind == "correlation" else "-", c.n, f"**{c.final.text}**"]


def ledger_markdown(ledger: Ledger) -> str:
    out = ["# Claims ledger", "",
           "Written by `sebench claims` (`make claims`) from the committed run records: each profile's "
           "`runs.csv` (as `sebench collect` consolidated `runs/`) and the excitation analyses committed in run "
           "folders. Nothing here is typed in; `claims.csv` holds every number at full precision, "
           "`claims.png` draws them. One row per distinct comparison: a comparison that several tables report "
           "(the same recipes for the same seeds) is one row that names them all.", "",
           "## How to read it", "",
           "- **Δ [95% CI]**: variant − baseline of the final-epoch test metric, paired by seed; Student t "
           "interval on the per-seed differences, 95%, raw (not adjusted for multiplicity). Accuracy and error "
           "in percentage points, test loss in its units.",
           "- **vs 0, Holm**: the verdict against zero and its Holm-adjusted p (two-sided paired t; the family is "
           "the table that reports the comparison, every metric of it; a table's comparisons against its "
           "second baseline, e.g. each one-stage SE against SE in all stages, are a family of their own).",
           f"- **SD, df**: SD of the per-seed differences and the t test's degrees of freedom (n − 1). "
           f"**MDE (80%)**: the smallest true Δ a two-sided paired t test at {ALPHA:g} with these n pairs and this "
           f"SD detects with {POWER:.0%} power. **Seeds for source Δ**: the smallest n with that power for the "
           "source's Δ at this SD (the search stops at 10000).",
           "- **Machines**: a pair is on the same machine when both runs' records name the same CPU model and "
           "ISA (`AMD EPYC [avx512_bf16]`); a record without the bracket (written before the device name "
           "carried it) has an unknown ISA, which matches nothing: 'unknown' when the models agree, 'mixed' when "
           "they do not. **Same-machine Δ**: the estimate over the same-machine pairs only, beside the pooled "
           "one.",
           f"- **Equivalence margin**: {', '.join(f'{METRICS[m][0]} ±{v:g}' for m, v in DEFAULT_MARGINS.items())} "
           "unless a spec declares `equivalence_margin` (sebench/report/verdicts.py says why).",
           "- **Verdicts** (sebench/report/verdicts.py; the results tables' verdict column is the same):", ""]
    out += [f"  - {r}" for r in RULES]
    out += ["", "Tables with 3 or more arms also get an omnibus test (Friedman over the seeds every arm has), "
                "beside the per-arm rows; it gates nothing. Claims that are not paired deltas get their own "
                "test and p.", ""]
    main = [c for c in ledger.claims if not c.stand_in]
    stand = [c for c in ledger.claims if c.stand_in]
    out += ["## Summary", ""]
    for label, group in (("Source recipes and CPU profiles", main), ("Stand-ins", stand)):
        counts = {k: 0 for k in KINDS}
        for c in group:
            if c.kind == "paired":
                counts[c.final.kind] = counts.get(c.final.kind, 0) + 1
        n_paired = sum(1 for c in group if c.kind == "paired")
        n_other = len(group) - n_paired
        text = ", ".join(f"{k}: {v}" for k, v in counts.items() if v)
        out.append(f"- {label}: {n_paired} paired comparisons ({text or 'none'}); {n_other} omnibus and "
                   "correlation rows.")
    out += [""]
    out += _section(ledger, main, "Source recipes and CPU profiles",
                    "The source's recipe (`paper`) and the CPU profiles on the full data (their descriptions say how "
                    "each differs from the source).")
    out += _section(ledger, stand, "Stand-ins (quick, smoke): NOT the source's recipe",
                    "CPU stand-ins on small models or data and few epochs (`quick`), or seconds-long pipeline tests "
                    "(`smoke`). They show that a table's pipeline runs and which way a comparison goes on a small "
                    "model; they do not test the source's numbers, and their paired comparisons, on 2 seeds, give no "
                    "verdict.")
    if ledger.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in ledger.notes] + [""]
    return "\n".join(out).rstrip() + "\n"


def _section(ledger: Ledger, claims: list[Claim], title: str, intro: str) -> list[str]:
    out = [f"## {title}", "", intro, ""]
    if not claims:
        return out + ["None.", ""]
    for info in ledger.tables:
        mine = [c for c in claims if c.table == info.table and c.profile == info.profile and c.kind != "correlation"]
        if not mine:
            continue
        out += [f"### `{info.profile}`: {info.title} (`{info.table}`)", ""]
        total = sum(len(v) for v in info.pairs.values())
        if total:
            out.append(f"Machines: {total} run pairs: {len(info.pairs[SAME])} same machine, "
                       f"{len(info.pairs[MIXED])} mixed, {len(info.pairs[UNKNOWN])} unknown.")
            out.append("")
        paired = [c for c in mine if c.kind == "paired"]
        if paired:
            out += [_md(PAIRED_HEAD), _md(["---"] * len(PAIRED_HEAD))] + [_md(_paired_row(c)) for c in paired] + [""]
        omni = [c for c in mine if c.kind == "omnibus"]
        if omni:
            out += ["Omnibus:", ""] + [_md(OTHER_HEAD), _md(["---"] * len(OTHER_HEAD))]
            out += [_md(_other_row(c)) for c in omni] + [""]
    other = [c for c in claims if c.kind == "correlation"]
    if other:
        out += ["### Not paired deltas: excitation analyses", "",
                "Rank correlation of chance-corrected class specificity (ω²) with block depth, per analysed run "
                "(`sebench analyze`), n = its blocks, Holm across each profile's analyses; and over the analysed "
                "seeds of one recipe (`...-over-seeds`: mean ρ, Page's trend test), n = its seeds (no verdict "
                "under 3, as for paired comparisons), Holm across each profile's recipes.", ""]
        out += [_md(OTHER_HEAD), _md(["---"] * len(OTHER_HEAD))] + [_md(_other_row(c)) for c in other] + [""]
    return out


def write_ledger(results: str | Path = "results", folder: str | Path = "experiments", *, plot: bool = True,
                 log: Callable[[str], None] = lambda _m: None) -> tuple[Ledger, list[Path]]:
    """Build the ledger and write results/CLAIMS.md, claims.csv and (with plot) claims.png."""
    results = Path(results)
    ledger = build_ledger(results, folder, log=log)
    paths = [results / LEDGER_MD, results / LEDGER_CSV]
    atomic_write_text(paths[0], ledger_markdown(ledger))
    atomic_write_text(paths[1], ledger_csv(ledger))
    if plot:
        from sebench.report.plots import forest_plot
        paths.append(forest_plot(_plot_groups(ledger), results / LEDGER_PNG))
    return ledger, paths


def _plot_groups(ledger: Ledger) -> list[dict]:
    """What the forest plot draws: one panel per section and unit, one group per table, one line per claim."""
    panels: dict[tuple, dict] = {}
    for c in ledger.claims:
        if c.kind == "omnibus":
            continue
        if c.kind == "correlation":
            unit = "Spearman ρ of class specificity with depth (source: rises)"
        else:
            unit = "Δ test loss" if c.metric == "test_loss" else "Δ percentage points (error or accuracy)"
        section = "Stand-ins (quick): not the source's recipe" if c.stand_in else "Source recipe and CPU profiles"
        panel = panels.setdefault((c.stand_in, unit), {"title": f"{section}: {unit}", "groups": {}})
        group = f"{c.profile}: {c.table}"
        j = c.judgement
        if c.kind == "correlation":
            line = {"label": c.short, "mean": c.statistic_value, "low": None, "high": None, "source": None,
                    "verdict": c.final.text, "kind": c.final.kind, "right": f"p {_p(c.p)}"}
        else:
            metric = METRICS[c.metric][0].split(" (")[0]
            label = f"{c.short} [{metric}]"
            line = {"label": label, "mean": j.mean if j.n else None, "low": j.low, "high": j.high,
                    "source": c.source_delta, "verdict": c.final.text, "kind": c.final.kind,
                    "mixed": bool(c.pairs.get(MIXED)), "right": f"n={j.n}"}
        panel["groups"].setdefault(group, []).append(line)
    order = sorted(panels, key=lambda k: (k[0], "ρ" in k[1], "loss" in k[1]))
    return [{"title": panels[k]["title"], "groups": list(panels[k]["groups"].items()),
             "correlation": "ρ" in k[1]} for k in order]
