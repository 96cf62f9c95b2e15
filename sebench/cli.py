"""The `sebench` command. The Makefile only calls this; each subcommand is a thin layer over the package.

A user's mistake (UserError) ends in one line on stderr and exit code 2, never a traceback.
Heavy imports happen inside the subcommands so `sebench --help` stays instant.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Sequence

from sebench.errors import UserError


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Plain aligned text table (numbers right-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_is_number(r[i]) for r in cells[1:]) for i in range(len(headers))]

    def line(r):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep, *map(line, cells[1:])])


def _is_number(s: str) -> bool:
    try:
        float(s.rstrip("M").rstrip("G"))
        return True
    except ValueError:
        return s in ("-", "")


def _parse_stages(text: str | None):
    if text is None or text == "all":
        return None
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UserError(f"--stages {text!r} is not a comma-separated list of stage numbers",
                        where="--stages", fix="e.g. --stages 3,4 or --stages all") from None


def add_se_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SE options (any of them turns SE on)")
    g.add_argument("--variant", help="se | slow_squeeze | slow_excite | slow_squeeze_slow_excite | bump")
    g.add_argument("--reduction", type=int, help="reduction ratio r (hidden width C // r)")
    g.add_argument("--latent-channels", type=float,
                   help="hidden width as a count (>= 1) or a fraction of C (< 1); overrides --reduction")
    g.add_argument("--squeeze", help="avg | max | none (NoSqueeze)")
    g.add_argument("--gate", help="sigmoid | tanh | relu")
    g.add_argument("--position", help="standard | pre | post | identity | after_3x3")
    g.add_argument("--no-bias", action="store_true", help="FC layers without bias (the paper's ablations)")
    g.add_argument("--stages", help="comma-separated stage ids that get SE (default: all)")


def se_from_args(args) -> dict | None:
    """SE options given on the command line, or None when none was given."""
    opts = {"variant": args.variant, "reduction": args.reduction, "squeeze": args.squeeze,
            "gate": args.gate, "position": args.position}
    if args.latent_channels is not None:
        lc = args.latent_channels
        opts["latent_channels"] = int(lc) if float(lc).is_integer() else lc
    if args.no_bias:
        opts["bias"] = False
    opts = {k: v for k, v in opts.items() if v is not None}
    return opts if (opts or args.stages) else None


def cmd_models(args) -> int:
    from sebench.bench import count_flops, count_params
    from sebench.layers.se import make_se_config, se_modules
    from sebench.models import MODELS, build_model, get_entry
    from sebench.progress import Board

    names = args.names or list(MODELS)
    for n in names:
        get_entry(n)
    custom = se_from_args(args)
    se_cfg = make_se_config(custom if custom is not None else "se")
    stages = _parse_stages(args.stages)
    se_label = "paper SE (r=16, all stages)" if custom is None else se_cfg.short() + (
        f", stages {','.join(map(str, stages))}" if stages else ", all stages")
    rows = []
    with Board("counting", len(names), unit="models") as board:
        for name in names:
            board.update(status=name)
            base = build_model(name)
            se_model = build_model(name, se=se_cfg, se_stages=stages)
            size = base.input_size
            rows.append([name, f"{size[1]}x{size[2]}", f"{count_params(base) / 1e6:.3f}",
                         f"{count_flops(base, size) / 1e9:.3f}", f"{count_params(se_model) / 1e6:.3f}",
                         f"{count_flops(se_model, size) / 1e9:.3f}", len(se_modules(se_model))])
            board.advance()
    print(f"SE columns: {se_label}. GFLOPs = multiply-adds for one image (torch.utils.flop_counter / 2).")
    print(format_table(["model", "input", "params (M)", "GFLOPs", "SE params (M)", "SE GFLOPs",
                        "SE modules"], rows))
    if len(names) == 1:
        mods = se_modules(se_model)
        widths = sorted({"->".join(map(str, m.widths)) for m in mods.values()})
        print(f"\n{names[0]}: {get_entry(names[0]).description}")
        print(f"SE modules: {', '.join(mods) or 'none'}")
        print(f"SE widths: {'; '.join(widths) or '-'}")
    return 0


def cmd_bench(args) -> int:
    from sebench.bench import benchmark
    from sebench.models import build_model, get_entry

    get_entry(args.model)
    model = build_model(args.model, se=se_from_args(args), se_stages=_parse_stages(args.stages))
    size = model.input_size if args.input_size is None else (3, args.input_size, args.input_size)
    from sebench.engine.builders import device_kind

    device = device_kind(args.device)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    result = benchmark(model, input_size=size, batch_size=args.batch_size, device=device,
                       channels_last=args.channels_last, warmup=args.warmup, iters=args.iters)
    rows = [[k, v] for k, v in result.items()]
    print(format_table(["quantity", "value"], rows))
    return 0


def _parse_set(items: Sequence[str] | None) -> dict:
    """`--set key=value` (dotted key, YAML value) -> {key: value}."""
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r} is not key=value", where="--set",
                            fix="e.g. --set epochs=5 or --set data.name=cifar10-jpeg")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise UserError(f"{value!r} is not a valid YAML value ({problem})", where="--set",
                            field=key.strip(), fix="quote a text value and close every bracket, e.g. "
                                                   "--set 'model.se_stages=[1,2]' or --set \"data.name='x'\"") from None
    return out


def _spec_and_profile(args):
    from sebench.spec import find_spec, load_spec

    spec = load_spec(find_spec(args.spec), max_runs=getattr(args, "max_runs", None))
    profile = args.profile
    if profile not in spec.profiles:
        from sebench.errors import choice_error
        raise choice_error("profile", profile, spec.profiles, where=args.spec, field="--profile")
    return spec, profile


def cmd_plan(args) -> int:
    from sebench.report.data import duration
    from sebench.runner import find_reusable, parse_only, plan

    spec, profile = _spec_and_profile(args)
    results = Path(args.results)
    rows, pending = plan(spec, profile, results, _parse_set(args.set), parse_only(args.only, spec, profile))
    # What `sebench run` would adopt instead of training (same flag, same rule: runner.find_reusable).
    sources = {} if args.no_reuse else find_reusable(rows, results)
    for row in rows:
        if row.run.run_id in sources:
            row.status = "reusable"
    from sebench.runner import check_data_paths, with_execution
    to_run = [row for row in rows if row.status not in ("finished", "reusable", "damaged", "locked")]
    try:  # as `run` will before it starts anything; a plan is still worth showing, so here a warning
        check_data_paths([with_execution(row.run) for row in to_run], where=spec.path)
        data_problem = None
    except UserError as err:
        data_problem = err
    if not args.ignore_memory_check:  # the check `sebench run` makes before starting anything
        from sebench.engine.memory import check_memory
        check_memory([r.run for r in rows if r.status not in ("finished", "reusable", "damaged")],
                     device=args.device, max_memory_gb=args.max_memory, where=spec.path)
    # Runs this device would refuse (amp bf16 on a CPU without native bf16): `sebench run` stops on them.
    from sebench.engine.builders import amp_refusal
    refused = {row.run.run_id: exc for row in rows if row.status not in ("finished", "reusable")
               and (exc := amp_refusal(row.run, args.device))}
    measured, scaled, took = {}, {}, {}
    if args.estimate:
        from sebench.estimate import estimate_seconds, finished_here, measured_seconds, scaled_seconds
        from sebench.store import RunDir
        for row in rows:  # a finished row shows what it took, never a guess (an adopted one: its source's)
            summary = RunDir(row.directory).read_summary() if row.status == "finished" else None
            if summary is not None and summary.wall_s:
                took[row.run.run_id] = row.est_seconds = summary.wall_s
        finished = finished_here(rows, device=args.device)  # one scan of the store for both
        measured = measured_seconds([r for r in rows if r.run.run_id not in took], device=args.device,
                                    finished=finished)
        scaled = scaled_seconds([r for r in rows if r.status not in ("finished", "reusable")],
                                device=args.device, skip=measured, finished=finished)
        for row in rows:
            if row.status != "reusable" and row.run.run_id not in refused and row.run.run_id not in took:
                known = measured.get(row.run.run_id) or scaled.get(row.run.run_id)
                row.est_seconds = known[0] if known else estimate_seconds(row.run, device=args.device)
    table = []
    for row in rows:
        labels = ", ".join(f"{k}={v}" for k, v in row.run.labels.items())
        est = "-" if row.est_seconds is None else duration(row.est_seconds)
        if row.run.run_id in refused:
            est = f"refused here (amp {row.run.amp})"
        if row.run.run_id in took:
            est += " (took)"
        elif row.run.run_id in measured and row.est_seconds is not None:
            est += f" (m{measured[row.run.run_id][1]})"
        elif row.run.run_id in scaled and row.est_seconds is not None:
            n, basis = scaled[row.run.run_id][1:]
            est += f" ({'e' if basis == 'epochs' else 'f'}{n})"
        source = sources.get(row.run.run_id)
        status = f"reusable: {source.parent.name}/{source.name}" if source else row.status
        table.append([row.run.run_id, labels or "(base)", row.run.seed, row.run.model.name,
                      row.run.data.name, row.run.epochs, status, est])
    for p in pending:
        labels = ", ".join(f"{k}={v}" for k, v in p.labels.items())
        table.append(["-", labels, "-", "-", "-", "-", "pending: " + p.reason, "-"])
    print(f"{spec.name} [{profile}]: {spec.title}")
    print(format_table(["run_id", "labels", "seed", "model", "data", "epochs", "status", "est. time"], table))
    counts = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    line = f"\n{len(rows)} runs ({summary or 'none'}), {len(pending)} pending"
    if args.estimate:
        from sebench.engine.builders import device_kind
        from sebench.estimate import cpu_busy_note
        todo = [r for r in rows if r.status not in ("finished", "reusable") and r.run.run_id not in refused]
        known = [r.est_seconds for r in todo if r.est_seconds is not None]
        if todo or not refused:
            line += (f"; estimated time to finish on {device_kind(args.device)}, one run at a time: "
                     f"{duration(sum(known))}")
        if len(known) < len(todo):
            line += f" + {len(todo) - len(known)} runs whose data-set size is unknown"
        if any(r.run.run_id not in measured and r.run.run_id not in scaled for r in todo
               if r.est_seconds is not None):
            line += cpu_busy_note(args.device)
        from sebench.bench import device_name
        here = device_name(device_kind(args.device))
        if took:
            line += ("\n(took): the finished run's own wall time, training and evaluation (an adopted run's: "
                     "its source's, wherever that trained)")
        if measured:
            line += (f"\n(mN): median wall time of the N finished runs of the same recipe (other seeds) on this "
                     f"{here}, at the threads and load they had")
        bases = {scaled[r.run.run_id][2] for r in rows if r.run.run_id in scaled and r.run.run_id not in refused}
        same = "with the same data, batch, precision, memory layout and threads"
        if "epochs" in bases:
            line += (f"\n(eN): the median time an epoch of N finished runs of the same network (another "
                     f"schedule or experiment) took on this {here} {same}, times this run's epochs")
        if "flops" in bases:
            line += (f"\n(fN): the median time per epoch and multiply-add of N finished runs of other networks "
                     f"on this {here} {same}, times this run's epochs and multiply-adds (rough: SE's cost is "
                     f"more than its arithmetic)")
    if refused:
        exc = next(iter(refused.values()))
        line += (f"\n{len(refused)} runs cannot run on this machine: {exc.message} ({exc.fix}); "
                 f"`sebench run` stops before training any")
    print(line)
    if data_problem is not None:
        print(f"sebench: warning: {data_problem}; `sebench run` stops on it before starting any run", file=sys.stderr)
    if "damaged" in counts:  # quarantined: `run` leaves them alone until the user deletes them
        from sebench.store import damaged_runs
        ids = {row.run.run_id for row in rows if row.status == "damaged"}
        _print_damaged([d for d in damaged_runs(results, spec.name) if d.run_id in ids])
    print(f"store: {results / 'runs' / spec.name}")
    return 0


def cmd_run(args) -> int:
    from sebench.engine.builders import device_kind
    from sebench.engine.distributed import launched_world, process_group
    from sebench.runner import Interrupted, parse_only, run_sweep

    spec, profile = _spec_and_profile(args)
    only = parse_only(args.only, spec, profile)
    if args.jobs < 1:
        raise UserError("--jobs must be at least 1", where="--jobs")
    _check_jobs(args.jobs, args.device)
    if args.launcher == "slurm":
        if args.jobs != 1:
            raise UserError("--jobs has no effect with --launcher slurm: every run is its own array task",
                            where="--jobs", fix="leave it out (the spec's slurm.array_parallelism limits them)")
        return _run_slurm(args, spec, profile, only)
    if args.launcher == "torchrun" and launched_world() is None:  # inside torchrun already: just run
        from sebench.launch import check_launch, default_nproc, run_torchrun
        from sebench.runner import check_data_parallel, todo_rows
        from sebench.store import check_writable

        nproc = args.nproc if args.nproc is not None else default_nproc(device_kind(args.device))
        check_launch(args, nproc)
        check_writable(Path(args.results) / "runs" / spec.name)
        _, todo, _ = todo_rows(spec, profile, Path(args.results), _parse_set(args.set), only)
        check_data_parallel([r.run for r in todo], nproc, args.device, args.sync_bn or None)
        return run_torchrun(args, nproc)
    if args.nproc is not None and launched_world() is None:
        raise UserError("--nproc needs --launcher torchrun", where="--nproc")
    # Plain `torchrun -m sebench run ...` lands here too: WORLD_SIZE/RANK in the environment.
    with process_group(device_kind(args.device)) as world:
        try:
            result = run_sweep(spec, profile, Path(args.results), jobs=args.jobs, device=args.device,
                               overrides=_parse_set(args.set), data_path=args.data_path, cache_dir=args.cache_dir,
                               download=args.download, progress=not args.no_progress,
                               sync_bn=True if args.sync_bn else None, wandb=args.wandb, only=only,
                               reuse=not args.no_reuse, memory_check=not args.ignore_memory_check,
                               max_memory_gb=args.max_memory)
        except Interrupted as stop:  # Ctrl-C: the workers are ended; the same command resumes their runs
            if world.is_main:
                n = len(stop.runs)
                print(f"interrupted: {n} run{'s' if n != 1 else ''} stopped; their last epoch checkpoints are "
                      f"kept; resume with: sebench {shlex.join(args.argv)}", file=sys.stderr)
            return 130
        if world.is_main:
            _print_sweep(spec.name, profile, result, args.results)
    return 1 if result.incomplete else 0


def _check_jobs(jobs: int, device: str) -> None:
    """--jobs N starts N worker processes: more than the cores (or GPUs) there are only share them, and
    a huge N exhausts processes and file descriptors before any run starts."""
    from sebench.engine.builders import device_kind
    from sebench.engine.env import available_cpus
    from sebench.runner import visible_gpus

    gpus = len(visible_gpus()) if device_kind(device) != "cpu" else 0
    cap = max(available_cpus(), gpus)
    if jobs > cap:
        raise UserError(f"--jobs {jobs} is more than the {cap} CPU core(s) or GPU(s) this process may use",
                        where="--jobs", fix=f"use --jobs {cap} or fewer")


def _print_sweep(name: str, profile: str, result, results: str) -> None:
    from sebench.runner import print_failures

    reused = f"{len(result.reused)} reused from identical runs, " if result.reused else ""
    damaged = f", {len(result.damaged)} damaged (quarantined)" if result.damaged else ""
    damaged += f", {len(result.foreign)} locked by another host" if result.foreign else ""
    print(f"\n{name} [{profile}]: {len(result.finished)} finished now, {reused}{len(result.skipped)} already "
          f"finished, {len(result.locked)} running elsewhere, {len(result.failed)} failed{damaged}")
    print_failures(result)
    print(f"runs: {Path(results) / 'runs' / name}")


def _run_slurm(args, spec, profile, only: dict) -> int:
    """--launcher slurm: one job array, one run per task (sebench/slurm.py)."""
    from sebench import slurm

    waits = args.wait or args.cluster in ("local", "debug")
    if args.wandb and not waits:
        raise UserError("--wandb mirrors runs as they end, which a submission that does not wait never sees",
                        where="--wandb", fix="add --wait (or run `sebench run ... --wandb` later: finished "
                                             "runs are skipped, so only mirroring is left)")
    cfg = slurm.resolve_slurm(spec, {"partition": args.partition, "account": args.account, "time": args.time,
                                     "nodes": args.nodes, "gpus_per_node": args.gpus_per_node})
    sub = slurm.submit_sweep(spec, profile, Path(args.results), cfg, cluster=args.cluster,
                             folder=Path(args.slurm_folder) if args.slurm_folder else None,
                             overrides=_parse_set(args.set), device=args.device, data_path=args.data_path,
                             cache_dir=args.cache_dir, download=args.download,
                             sync_bn=True if args.sync_bn else None, only=only, reuse=not args.no_reuse)
    if sub.jobs and not waits:
        print(f"follow with: squeue --me; then `sebench collect --results {args.results}`")
        return 0
    result = slurm.wait(sub)  # with no jobs at once: what was skipped or adopted
    if args.wandb:  # the array's runs have ended: mirror them whole (no live logging across jobs)
        from sebench.store import RunDir
        from sebench.tracking import LiveMirror
        with LiveMirror(spec, profile, Path(args.results)) as mirror:
            for run_id, outcome in result.outcomes():
                mirror.on_end(RunDir.of(Path(args.results), spec.name, run_id).path, outcome)
    _print_sweep(spec.name, profile, result, args.results)
    return 1 if result.incomplete else 0


def cmd_specs(args) -> int:
    from sebench.spec import list_specs, load_spec

    paths = list_specs(args.folder)
    if not args.long:
        print("\n".join(p.stem for p in paths))
        return 0
    rows = []
    for p in paths:
        spec = load_spec(p)
        rows.append([p.stem, ", ".join(spec.profiles), spec.title])
    print(format_table(["spec", "profiles", "title"], rows))
    return 0


def cmd_collect(args) -> int:
    from sebench.store import collect

    damaged: list = []
    written = collect(args.results, args.profile, damaged)
    if not written:
        print(f"no runs found under {Path(args.results) / 'runs'}")
    for profile, path in written.items():
        n = sum(1 for _ in open(path)) - 1
        print(f"{profile}: {n} runs -> {path}")
    _print_damaged(damaged)
    return 0


def _print_damaged(damaged: list) -> None:
    """Quarantined run records (store.DamagedRun): named, with the fix, never silently left out."""
    if damaged:
        print(f"{len(damaged)} damaged run record(s) quarantined (not in runs.csv, not in tables):", file=sys.stderr)
        for d in damaged:
            print(f"  {d.line()}", file=sys.stderr)


def cmd_doctor(args) -> int:
    from sebench.store import damaged_runs

    damaged = damaged_runs(args.results)
    _print_damaged(damaged)
    if not damaged:
        print(f"{Path(args.results) / 'runs'}: no damaged run records")
    return 1 if damaged else 0


def cmd_report(args) -> int:
    from sebench.report.build import report_all, report_spec

    if args.paired_with:
        return _report_pair(args)
    if args.spec == "all":
        reports = report_all(args.profile, args.results, plots=not args.no_plots)
        index = reports[0].markdown_path.parent / "README.md"
    else:
        spec, profile = _spec_and_profile(args)
        reports = [report_spec(spec, profile, args.results, plots=not args.no_plots)]
        index = None
    for rep in reports:
        print(rep.table.markdown())
    for rep in reports:
        print(f"{rep.spec.name}: " + ", ".join(str(p) for p in rep.tables + rep.plots))
        for other, what, paths in rep.paired:
            print(f"{rep.spec.name} paired with {other} ({what}): " + ", ".join(str(p) for p in paths))
        if rep.excitation:
            print(f"{rep.spec.name} excitation over seeds: " + ", ".join(str(p) for p in rep.excitation))
    if index is not None:
        print(f"index: {index}")
    if args.wandb:
        from sebench.tracking import mirror_report
        local = mirror_report(args.profile, [p for r in reports for p in r.tables + r.excitation],
                              [p for r in reports for p in r.plots])
        print(f"W&B: {local}" if local else "W&B: not mirrored (see the warning above)")
    return 0


def _report_pair(args) -> int:
    from sebench.report.build import report_pair

    if args.spec == "all":
        raise UserError("--paired-with pairs two profiles of one spec, not of 'all'", field="SPEC",
                        fix=f"name the spec, e.g. `sebench report cifar10_se_vs_baseline --profile {args.profile} "
                            f"--paired-with {args.paired_with}`")
    if args.wandb:
        raise UserError("--wandb mirrors a profile's own tables and plots, not a paired table", field="--wandb",
                        fix="run `sebench report SPEC --profile PROFILE --wandb` without --paired-with")
    spec, profile = _spec_and_profile(args)
    table, paths = report_pair(spec, profile, args.paired_with, args.results)
    print(table.markdown())
    print(f"{table.name}: " + ", ".join(str(p) for p in paths))
    return 0


def cmd_claims(args) -> int:
    from sebench.report.claims import write_ledger

    ledger, paths = write_ledger(args.results, args.folder, plot=not args.no_plot)
    paired = [c for c in ledger.claims if c.kind == "paired"]
    counts: dict[str, int] = {}
    for c in paired:
        counts[c.final.kind] = counts.get(c.final.kind, 0) + 1
    mixed = sum(1 for c in paired if c.pairs.get("mixed"))
    print(f"{len(ledger.claims)} claims ({len(paired)} paired comparisons, "
          f"{sum(1 for c in ledger.claims if c.stand_in)} of all rows from stand-in profiles); verdicts of the "
          "paired: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"{mixed} paired comparisons have pairs trained on different machines (flagged in the ledger)")
    for note in ledger.notes:
        print(f"note: {note}")
    print("ledger: " + ", ".join(str(p) for p in paths))
    return 0


def cmd_wandb_sync(args) -> int:
    from sebench.tracking import sync_offline

    done = sync_offline(args.dir, include_synced=args.include_synced)
    print(f"{len(done)} offline W&B runs uploaded from {args.dir}")
    return 0


def cmd_wandb_dashboard(args) -> int:
    import json
    import os

    from sebench.spec import list_specs
    from sebench.store import atomic_write_text
    from sebench.tracking import default_dir

    try:
        from sebench.tracking import dashboard
        import wandb_workspaces  # noqa: F401  (only to fail early with a clear message)
    except ImportError:
        raise UserError("wandb-workspaces is not installed", where="wandb-dashboard",
                        fix="pip install 'sebench[wandb]'") from None
    if args.experiment is not None:
        known = sorted({p.stem for p in list_specs(args.folder)}
                       | {p.name for p in (Path(args.results) / "runs").glob("*") if p.is_dir()})
        if args.experiment not in known:
            raise UserError(f"no experiment {args.experiment!r} among the specs in {args.folder}/ or the runs in "
                            f"{Path(args.results) / 'runs'}", where="--experiment",
                            fix=f"one of: {', '.join(known) or '(none yet)'}")
    entity = args.entity or os.environ.get("WANDB_ENTITY") or None
    if args.save:
        dashboard.check_can_save(entity)
    workspace = dashboard.build_workspace(args.project, entity, args.experiment,
                                          dashboard.excitation_stages(args.results, args.experiment))
    text = json.dumps(dashboard.definition(workspace), indent=1) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        name = f"dashboard-{args.project}" + (f"-{args.experiment}" if args.experiment else "") + ".json"
        out = Path(args.out) if args.out else default_dir(Path(args.results)) / "wandb" / name
        atomic_write_text(out, text)
        panels = sum(len(s.panels) for s in workspace.sections)
        print(f"workspace {workspace.name!r} for {entity or '<entity>'}/{args.project}: {len(workspace.sections)} "
              f"sections, {panels} panels")
        print(f"definition: {out}")
    if args.save:
        print(f"saved: {dashboard.save(workspace)}")
    elif args.out != "-":
        print("create it in W&B with --save (needs --entity and an API key: `wandb login`)")
    return 0


def _split_list(items: Sequence[str] | None) -> list[str] | None:
    """`--blocks SE_2_3 SE_3_1` or `--blocks SE_2_3,SE_3_1` -> ['SE_2_3', 'SE_3_1']."""
    if not items:
        return None
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def cmd_analyze(args) -> int:
    import warnings

    from sebench.analysis.run import analyze_run, preflight

    runs = args.run_dir
    if args.out and len(runs) > 1:
        raise UserError(f"--out names one folder, but {len(runs)} runs were given", where="--out",
                        fix="give one RUN_DIR with --out, or leave --out out (each run's own analysis/ folder)")
    if args.wandb and args.out and Path(args.out).resolve() != (Path(runs[0]) / "analysis").resolve():
        raise UserError("--wandb logs the histograms of RUN_DIR/analysis, not of another folder", where="--out",
                        fix="leave --out out, or mirror without --wandb")
    blocks = _split_list(args.blocks)
    if blocks in (["paper"], ["all"]):
        blocks = blocks[0]
    for run_dir in runs:  # every run is checked before the first is analysed
        preflight(run_dir, blocks)
    outputs = []
    for i, run_dir in enumerate(runs, 1):
        if len(runs) > 1:
            print(f"[{i}/{len(runs)}] {run_dir}")
        with warnings.catch_warnings(record=True) as caught:  # shown as one line each, not with source lines
            warnings.simplefilter("always")
            result = analyze_run(run_dir, blocks=blocks, classes=_split_list(args.classes), out=args.out,
                                 data_path=args.data_path, cache_dir=args.cache_dir, device=args.device,
                                 threads=args.threads, progress=not args.no_progress)
        for w in caught:
            if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
                print(f"sebench: warning: {w.message}", file=sys.stderr)
        check = ("matches summary.json: the analysed checkpoint is the run's final model"
                 if result.checkpoint_matches else
                 f"DIFFERS from summary.json's {result.summary_top1_err}% (see the warning above)")
        print(f"{result.run_id}: test top-1 error {result.test_top1_err:.2f}% over {result.images} images, "
              f"{check}")
        print(f"blocks: {', '.join(result.blocks)}; classes: {', '.join(result.classes)}")
        out_dir = result.paths["report_json"].parent
        outputs.append(out_dir)
        print(f"outputs: {out_dir}")
        for path in result.paths.values():
            print(f"  {path.name}")
        if args.wandb:  # continues the run's W&B run (id = run_id): the histograms, nothing it already has
            from sebench.tracking import mirror_run
            local = mirror_run(run_dir)
            print(f"W&B: {local}" if local else "W&B: not mirrored (see the warning above)")
    if len(runs) > 1:
        print(f"analysed {len(runs)} runs; outputs: " + ", ".join(str(o) for o in outputs))
        print("the seeds of a table's row side by side: `sebench collect --profile P && sebench report SPEC "
              "--profile P` (tables/SPEC_excitation.md)")
    return 0


def cmd_speed(args) -> int:
    import torch

    from sebench.bench import device_name
    from sebench.engine.env import available_cpus
    from sebench.engine.builders import resolve_device
    from sebench.speed import remeasure_runs
    from sebench.store import SPEED_FILE, iter_summaries, read_speed

    for flag, value in (("--repeats", args.repeats), ("--iters", args.iters), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1", where=flag, fix=f"e.g. {flag} 3")
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads or available_cpus())
    finished: dict[str, list[Path]] = {}
    for directory, summary in iter_summaries(args.results):
        if summary.profile == args.profile and summary.finished:
            finished.setdefault(summary.experiment, []).append(directory)
    if args.spec == "all":
        names = sorted(finished)
    else:  # a spec path or name: its runs are stored under the spec's name
        names = [Path(args.spec).name.removesuffix(".yaml").removesuffix(".yml")]
    if not names or not all(n in finished for n in names):
        missing = next((n for n in names if n not in finished), "any experiment")
        raise UserError(f"no finished runs of {missing} in profile {args.profile!r}",
                        where=str(Path(args.results) / "runs"),
                        fix=f"run `sebench run SPEC --profile {args.profile}` first, or pick the profile "
                            "the runs were made in")
    here = device_name(device)

    def measured_here(d: Path) -> bool:
        rec = read_speed(d)
        return rec.get("device_name") == here and rec.get("threads") == torch.get_num_threads()

    written = []
    for name in names:
        dirs = finished[name]
        if not args.force and all(measured_here(d) for d in dirs):  # one sitting per experiment
            print(f"{name}: all {len(dirs)} runs already re-measured on {here} with "
                  f"{torch.get_num_threads()} thread(s) (--force measures again)")
            continue
        print(f"{name}:", flush=True)
        written += remeasure_runs(dirs, device=device, repeats=args.repeats, iters=args.iters,
                                  log=lambda msg: print(f"  {msg}", flush=True))
    print(f"wrote {len(written)} {SPEED_FILE} file(s) under {Path(args.results) / 'runs'}; next: "
          f"`sebench collect --profile {args.profile}` and `sebench report {args.spec} --profile {args.profile}` "
          f"(plots then use these speeds)")
    return 0


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help="experiments/<name>.yaml, or just <name>")
    p.add_argument("--profile", default="quick", help="paper | quick | smoke | any the spec declares")
    p.add_argument("--results", default="results", help="results root (default: ./results)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a run setting for every run (dotted key), e.g. --set epochs=5")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--only", action="append", metavar="AXIS=LABEL",
                   help="only the runs with this sweep label (repeatable: labels of one axis are "
                        "alternatives, different axes all apply; seed=N picks a seed), e.g. "
                        "--only model=ResNet-50 --only se=SENet --only seed=0")
    p.add_argument("--max-runs", type=int, metavar="N",
                   help="the most runs a profile may expand to (default: the spec's max_runs, else 10,000): "
                        "a larger sweep stops before anything is built")
    p.add_argument("--max-memory", type=float, metavar="GB",
                   help="memory budget for the runs at once (default: 80%% of what this machine has available); "
                        "a run estimated to need more stops before anything starts")
    p.add_argument("--ignore-memory-check", action="store_true",
                   help="start runs even where the memory estimate says they will not fit")
    p.add_argument("--no-reuse", action="store_true",
                   help="train every missing run, even one whose recipe (all but the experiment name) another "
                        "experiment has finished; by default that run's records are adopted, marked reused_from")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sebench", description="Reproduce the SE paper's and arXiv 2304.06502's tables.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("models", help="list the model zoo with params and FLOPs, plain and with SE")
    p.add_argument("names", nargs="*", metavar="MODEL", help="only these models (default: all)")
    add_se_options(p)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("bench", help="training/inference throughput, latency, params and FLOPs")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--batch-size", type=int, default=32, help="fixed batch size (recorded, never shrunk)")
    p.add_argument("--input-size", type=int, help="square input side (default: the model's)")
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    add_se_options(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("plan", help="list a spec's runs, which are in the store, and their estimated cost")
    add_run_options(p)
    p.add_argument("--no-estimate", dest="estimate", action="store_false",
                   help="skip the cost estimate (it measures this device's throughput for a few seconds)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="run what is missing, resume what was interrupted, skip what finished")
    add_run_options(p)
    p.add_argument("--jobs", type=int, default=1,
                   help="parallel runs (CPU threads split; one GPU each). Two sweeps side by side: give each "
                        "--set execution.threads=1 (not part of the run id), or each takes every core")
    p.add_argument("--data-path", help="data set file or folder (cifar10-jpeg archive, torchvision root, "
                                       "ImageNet root)")
    p.add_argument("--cache-dir", help="decoded-data cache (default: $SEBENCH_CACHE or ~/.cache/sebench)")
    p.add_argument("--download", action="store_true",
                   help="let torchvision download CIFAR-10/100 or SVHN into --data-path")
    p.add_argument("--no-progress", action="store_true",
                   help="no live progress (the sweep and each running run: bars on a terminal, lines every "
                        "$SEBENCH_PROGRESS_INTERVAL s, default 30, in a log)")
    p.add_argument("--launcher", choices=("none", "torchrun", "slurm"), default="none",
                   help="none: this process (or the ranks of a torchrun that started it); torchrun: every run "
                        "data-parallel on --nproc processes of this machine; slurm: a job array, one run per "
                        "task (see docs/scaling.md)")
    p.add_argument("--nproc", type=int, help="torchrun: processes (default: the visible GPUs)")
    p.add_argument("--sync-bn", action="store_true",
                   help="data-parallel runs: SyncBatchNorm (CUDA only); same as --set execution.sync_bn=true")
    p.add_argument("--wandb", action="store_true",
                   help="mirror every run that ends to W&B (group = experiment; offline under ./wandb without an "
                        "API key, upload later with `sebench wandb-sync`)")
    g = p.add_argument_group("SLURM (--launcher slurm; defaults from the spec's `slurm:` section)")
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--time", type=int, help="minutes per job (a preempted or timed-out run requeues and resumes)")
    g.add_argument("--nodes", type=int, help="nodes per run (default 1)")
    g.add_argument("--gpus-per-node", type=int, help="GPUs (= processes) per node and run (default 1)")
    g.add_argument("--cluster", choices=("slurm", "local", "debug"), default="slurm",
                   help="submitit executor: slurm, or local to run the array on this machine")
    g.add_argument("--wait", action="store_true", help="wait for the jobs and report their outcome")
    g.add_argument("--slurm-folder", help="submitit logs and pickles (default: RESULTS/slurm/SPEC)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("specs", help="list the experiment specs (one per source table)")
    p.add_argument("--folder", default="experiments")
    p.add_argument("--long", action="store_true", help="with profiles and titles")
    p.set_defaults(func=cmd_specs)

    p = sub.add_parser("collect", help="consolidate every run into results/<profile>/runs.csv")
    p.add_argument("--results", default="results", help="results root (default: ./results)")
    p.add_argument("--profile", help="only this profile (default: every profile found)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("doctor", help="check the results store: damaged run records (quarantined), with the fix; "
                                      "exit 1 when it finds any")
    p.add_argument("--results", default="results", help="results root (default: ./results)")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("report", help="tables beside the source's numbers, and plots, from "
                                      "results/<profile>/runs.csv")
    p.add_argument("spec", metavar="SPEC", help="experiments/<name>.yaml, <name>, or 'all' (every spec with runs)")
    p.add_argument("--profile", default="quick", help="paper | quick | smoke | any the spec declares")
    p.add_argument("--results", default="results", help="results root (default: ./results)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument("--paired-with", metavar="PROFILE",
                   help="instead: pair every run of --profile with the same row and seed of this other profile "
                        "of SPEC (e.g. --profile full40_bf16 --paired-with full40: what bf16 does to accuracy); "
                        "writes <profile>/tables/<spec>_vs_<PROFILE>.md|tex|csv")
    p.add_argument("--wandb", action="store_true", help="also log the tables and plots to W&B (report-<profile>)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("claims", help="the claims ledger: every distinct comparison in the results, with what "
                                      "the data can say (results/CLAIMS.md, claims.csv, claims.png)")
    p.add_argument("--results", default="results", help="results root (default: ./results)")
    p.add_argument("--folder", default="experiments", help="the specs (default: ./experiments)")
    p.add_argument("--no-plot", action="store_true", help="CLAIMS.md and claims.csv only")
    p.set_defaults(func=cmd_claims)

    p = sub.add_parser("speed", help="re-measure the training and inference throughput of every "
                                     "configuration of an experiment's finished runs, side by side in one "
                                     "sitting (speed.json in each run folder; plots use it)")
    p.add_argument("spec", metavar="SPEC", help="experiments/<name>.yaml, <name>, or 'all' (every experiment "
                                                "with finished runs)")
    p.add_argument("--profile", default="quick", help="the profile whose runs are measured")
    p.add_argument("--results", default="results", help="results root (default: ./results)")
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--threads", type=int, help="CPU threads (default: all available)")
    p.add_argument("--repeats", type=int, default=5, help="round-robin passes (median, min and max reported)")
    p.add_argument("--iters", type=int, default=12,
                   help="timed steps per configuration and pass (3 proved noisy at CNN3/ResNet-20 size)")
    p.add_argument("--force", action="store_true", help="measure again even where this machine already did")
    p.set_defaults(func=cmd_speed)

    p = sub.add_parser("analyze", help="excitation study of a trained run (the paper's 'Role of "
                                       "Excitation'): CSVs and four figures in RUN_DIR/analysis")
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="+",
                   help="finished runs: results/runs/<experiment>/<run_id> (several: each is checked before "
                        "the first is analysed)")
    p.add_argument("--blocks", nargs="+", metavar="TAG",
                   help="SE blocks of the per-channel figures, e.g. SE_2_3 SE_3_1 (default: the paper's "
                        "selection; 'all' for every block); the depth plots always show every block")
    p.add_argument("--classes", nargs="+", metavar="CLASS",
                   help="classes shown, names or indices (default: four unalike ones, e.g. frog airplane "
                        "dog truck on CIFAR-10)")
    p.add_argument("--data-path", help="data set file or folder (default: the run's execution.data_path)")
    p.add_argument("--cache-dir", help="decoded-data cache (default: the run's, else $SEBENCH_CACHE)")
    p.add_argument("--out", help="output folder (default: RUN_DIR/analysis)")
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--threads", type=int, help="CPU threads (default: all available)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    p.add_argument("--wandb", action="store_true",
                   help="then log the excitation histograms per stage into the run's W&B run (same id as the "
                        "run; offline under ./wandb without an API key)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("wandb-sync", help="upload offline W&B runs (wandb sync)")
    p.add_argument("--dir", default="wandb", help="the wandb/ folder (default: ./wandb, beside results/)")
    p.add_argument("--include-synced", action="store_true", help="upload runs already synced again")
    p.set_defaults(func=cmd_wandb_sync)

    p = sub.add_parser("wandb-dashboard", help="the W&B workspace of sebench runs (wandb-workspaces): learning "
                                               "curves per arm, final error per arm and seed, accuracy vs "
                                               "throughput, excitation histograms, paired deltas")
    p.add_argument("--project", default="sebench", help="W&B project the runs were mirrored to (default: sebench)")
    p.add_argument("--entity", help="W&B user or team owning the project (default: $WANDB_ENTITY)")
    p.add_argument("--experiment", help="only this spec's runs (W&B group = experiment); default: every run")
    p.add_argument("--results", default="results", help="results root (excitation stages; default: results)")
    p.add_argument("--folder", default="experiments", help="spec folder (default: experiments)")
    p.add_argument("--out", help="where to write the definition (default: wandb/dashboard-<project>[-<experiment>]"
                                 ".json beside the results folder; '-' for stdout)")
    p.add_argument("--save", action="store_true", help="create the workspace in W&B (needs --entity, an API key "
                                                       "and the network) and print its URL")
    p.set_defaults(func=cmd_wandb_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command as given: what an interrupted sweep tells the user to run again
    try:
        return args.func(args) or 0
    except UserError as err:
        import os
        if os.environ.get("RANK", "0") == "0":  # the ranks of a torchrun all hit it: rank 0 reports
            print(f"sebench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sebench: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        # A results folder that cannot take a write (read-only, not ours, full disk, quota), met by any
        # command part-way: every store write is atomic, so nothing is left half-written; say which file.
        import errno
        fixes = {errno.ENOSPC: "free some space, or choose another --results folder",
                 errno.EDQUOT: "free some space, or choose another --results folder",
                 errno.EACCES: "make it writable, or choose another --results folder",
                 errno.EPERM: "make it writable, or choose another --results folder",
                 errno.EROFS: "choose a --results folder on a writable file system"}
        if exc.errno not in fixes:
            raise
        print(f"sebench: error: {exc.filename or 'the results folder'}: cannot write ({exc.strerror}) "
              f"({fixes[exc.errno]})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
