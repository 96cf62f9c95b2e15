"""`sebench report`: tables and plots for one spec or all of them, from results/<profile>/runs.csv.

    results/<profile>/tables/<spec>.md | .tex | .csv     (and README.md, the index, for `all`)
    results/<profile>/tables/<spec>_excitation.md | ...  (where analysed runs exist: report.excitation)
    results/<profile>/plots/<spec>_*.png | .svg

Every file is written atomically; nothing here trains or measures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from sebench.errors import UserError
from sebench.report.data import gather, profile_caveat, read_runs_csv
from sebench.report.excitation import excitation_table
from sebench.report.pairing import gather_pair, pair_table, profile_pair
from sebench.report.tables import VERDICTS, Table, build_table
from sebench.report.verdicts import NOT_TESTED, NO_VERDICT
from sebench.spec import Spec, expand
from sebench.store import atomic_write_text


@dataclass
class SpecReport:
    spec: Spec
    table: Table
    tables: list[Path]  # .md, .tex, .csv
    plots: list[Path] = field(default_factory=list)
    # tables pairing this profile with another of the spec (report.pairing): (other profile, what differs, paths)
    paired: list[tuple[str, str, list[Path]]] = field(default_factory=list)
    gates: Optional[Table] = None  # the analysed seeds' gates (report.excitation), where any run is analysed
    excitation: list[Path] = field(default_factory=list)  # its .md, .tex, .csv

    @property
    def markdown_path(self) -> Path:
        return self.tables[0]


def tables_dir(results: str | Path, profile: str) -> Path:
    return Path(results) / profile / "tables"


def plots_dir(results: str | Path, profile: str) -> Path:
    return Path(results) / profile / "plots"


def report_spec(spec: Spec, profile: str, results: str | Path, *, rows: Optional[list[dict]] = None,
                plots: bool = True, reference_root: Optional[Path] = None) -> SpecReport:
    """Write one spec's table (md, tex, csv) and plots; returns what it wrote."""
    if profile not in spec.profiles:
        from sebench.errors import choice_error
        raise choice_error("profile", profile, spec.profiles, where=spec.path, field="--profile")
    data = gather(spec, profile, results, rows=rows, reference_root=reference_root)
    table = build_table(data)
    paths = write_table(table, tables_dir(results, profile))
    plot_paths = []
    if plots and data.has_finished():
        from sebench.report.plots import plot_spec
        plot_paths = plot_spec(data, plots_dir(results, profile))
    gates = excitation_table(data)
    excitation = write_table(gates, tables_dir(results, profile)) if gates is not None else []
    return SpecReport(spec=spec, table=table, tables=paths, plots=plot_paths, gates=gates, excitation=excitation)


def write_table(table: Table, out: Path) -> list[Path]:
    """out/<table.name>.md, .tex and .csv, each written atomically."""
    paths = []
    for ext, text in (("md", table.markdown()), ("tex", table.latex()), ("csv", table.csv())):
        path = out / f"{table.name}.{ext}"
        atomic_write_text(path, text)
        paths.append(path)
    return paths


def report_all(profile: str, results: str | Path, folder: str | Path = "experiments", *, plots: bool = True,
               log: Callable[[str], None] = print) -> list[SpecReport]:
    """Every spec with at least one finished run in `profile`, plus the index tables/README.md (which also
    names the specs with none, so a missing table is visibly missing)."""
    from sebench.spec import list_specs, load_spec

    rows = read_runs_csv(Path(results), profile)
    finished = {r.get("experiment") for r in rows if r.get("status") == "finished"}
    reports, absent = [], []
    for path in list_specs(folder):
        try:
            spec = load_spec(path)
        except UserError as err:
            log(f"skipped {path}: {err}")
            continue
        if profile not in spec.profiles:
            absent.append((spec, f"the spec has no `{profile}` profile"))
        elif spec.name not in finished:
            absent.append((spec, _why_no_table(spec, profile)))
        else:
            rep = report_spec(spec, profile, results, rows=rows, plots=plots)
            rep.paired = paired_reports(spec, profile, results, rows=rows)
            reports.append(rep)
    if not reports:
        raise UserError(f"no finished runs of any spec in {folder}/ for profile {profile!r}",
                        where=str(Path(results) / profile / "runs.csv"),
                        fix=f"run `sebench run SPEC --profile {profile}` and `sebench collect` first")
    write_index(reports, profile, results, absent)
    return reports


def report_pair(spec: Spec, profile: str, against: str, results: str | Path) -> tuple[Table, list[Path]]:
    """The paired table of two profiles (report.pairing.pair_table), written beside `profile`'s own tables;
    returns it and the paths."""
    table = pair_table(spec, *gather_pair(spec, profile, against, results))
    return table, write_table(table, tables_dir(results, profile))


def paired_reports(spec: Spec, profile: str, results: str | Path, *, rows: Optional[list[dict]] = None
                   ) -> list[tuple[str, str, list[Path]]]:
    """The paired table (report.pairing) of `profile` with each other profile of the spec that repeats its runs
    with one recipe change, where `profile` is the changed side (bf16 against fp32, 40 epochs against 12):
    the tables the claims ledger names, written beside the profile's own."""
    mine = gather(spec, profile, results, rows=rows)
    out = []
    for other in spec.profiles:
        if other == profile or not (Path(results) / other / "runs.csv").exists():
            continue
        theirs = gather(spec, other, results)
        pair = profile_pair(mine, theirs) if theirs.has_finished() else None
        if pair is None or pair.changed is not mine:
            continue
        paths = write_table(pair_table(spec, mine, theirs), tables_dir(results, profile))
        out.append((other, f"{pair.side(mine)} vs {pair.side(theirs)}", paths))
    return out


def _why_no_table(spec: Spec, profile: str) -> str:
    """A spec has no table: say whether runs are merely waiting to be made or no row can run at all yet."""
    runs, pending = expand(spec, profile)
    if runs:
        return f"no finished run yet ({len(runs)} planned)"
    reasons = list(dict.fromkeys(p.reason for p in pending))
    return "every row pending: " + "; ".join(reasons) if reasons else "the profile plans no run"


def write_index(reports: list[SpecReport], profile: str, results: str | Path,
                absent: Sequence[tuple[Spec, str]] = ()) -> Path:
    lines = [f"# Results tables, profile `{profile}`", "",
             f"Profile `{profile}`: {profile_caveat(profile)}. Each table names its data, hardware, seeds and "
             "compute; Δ = variant − same-recipe baseline, paired by seed, 95% interval (paired Student t).", "",
             "| spec | title | runs finished / planned | failed | " + " | ".join(v for v in VERDICTS)
             + " | plots |",
             "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in VERDICTS) + " | --- |"]
    from sebench.report.plots import existing_plots
    for rep in reports:
        t = rep.table
        # --no-plots writes none: link the ones an earlier report left, so the index does not lose them
        shown = rep.plots or existing_plots(rep.spec.name, plots_dir(results, profile))
        plots = ", ".join(f"[{p.stem.removeprefix(rep.spec.name + '_')}](../plots/{p.name})"
                          for p in shown if p.suffix == ".png") or "-"
        lines.append(f"| [{rep.spec.name}]({rep.spec.name}.md) | {t.title.replace('|', '/')} | "
                     f"{t.n_finished} / {t.n_planned} | {t.n_failed} | "
                     + " | ".join(str(t.verdicts.get(v, 0)) for v in VERDICTS) + f" | {plots} |")
    lines += ["", f"Verdict counts are per (row, metric) comparison, as each table states them (defined in "
                  f"sebench/report/verdicts.py; results/CLAIMS.md lists every comparison once): '{NO_VERDICT}' = "
                  f"fewer than 3 paired seeds, '{NOT_TESTED}' = no paired runs yet.", ""]
    paired = [(rep.spec, other, what, paths) for rep in reports for other, what, paths in rep.paired]
    if paired:
        lines += ["## Paired with another profile", "",
                  "Each run of this profile beside the run of another profile with the same sweep labels and "
                  "seed, which repeats it with one recipe change: per row Δ = this profile − the other, and "
                  "per effect (variant − baseline) how the change alters it, paired by seed (report.pairing).",
                  "", "| table | spec | against | change |", "| --- | --- | --- | --- |"]
        lines += [f"| [{paths[0].stem}]({paths[0].name}) | {spec.name} | `{other}` | {what} |"
                  for spec, other, what, paths in paired]
        lines.append("")
    gates = [rep for rep in reports if rep.excitation]
    if gates:
        lines += ["## Excitation over seeds", "",
                  "The gates of each row's analysed runs (`sebench analyze`), block by block, mean ± std over "
                  "seeds (report.excitation).", "", "| table | spec | runs analysed |", "| --- | --- | ---: |"]
        lines += [f"| [{rep.excitation[0].stem}]({rep.excitation[0].name}) | {rep.spec.name} | "
                  f"{rep.gates.n_finished} |" for rep in gates]
        lines.append("")
    if absent:
        lines += ["## Specs without a table in this profile", "",
                  f"`sebench plan SPEC --profile {profile}` lists their runs and what they would cost.", "",
                  "| spec | title | why |", "| --- | --- | --- |"]
        lines += [f"| {spec.name} | {spec.title.replace('|', '/')} | {why} |" for spec, why in absent]
        lines.append("")
    path = tables_dir(results, profile) / "README.md"
    atomic_write_text(path, "\n".join(lines))
    return path
