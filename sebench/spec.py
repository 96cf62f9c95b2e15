"""Run configurations (and, in time, the experiment-spec schema that expands into them).

A RunConfig is complete and frozen: everything that affects the numbers is in it. Its `run_id` is a hash
of that content, so a sweep re-run finds finished runs. `execution` holds how a run is executed (device,
threads, data path, progress bars): recorded in env.json, but not part of the identity, because moving a
run to another machine or path must not make it a different experiment.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator,
                      model_serializer, model_validator)
from pydantic_core import PydanticSerializationError

from sebench.errors import UserError, choice_error
from sebench.layers.se import Form, GateName, SEConfig, Squeeze, Variant


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SurgeryCfg(_Strict):
    """Architecture-agnostic SE (source 000): an SE module after every Conv2d with min(in, out) channels
    >= min_channels, hidden width latent_channels (a count, or a fraction of the channels when < 1)."""

    min_channels: int = Field(128, ge=0)
    latent_channels: Union[int, float] = 64
    variant: Variant = "se"
    squeeze: Squeeze = "avg"
    gate: GateName = "sigmoid"
    bias: bool = True


class ModelCfg(_Strict):
    name: str
    num_classes: Optional[int] = Field(None, ge=1)  # None: the dataset's class count
    se: Optional[SEConfig] = None
    se_stages: Optional[tuple[int, ...]] = None  # None: every stage
    surgery: Optional[SurgeryCfg] = None  # SE after convs, on top of (usually instead of) `se`
    # Extra constructor options (e.g. stride_in). JSON values only: they are hashed into the run id, and
    # YAML's !!binary, !!set or dates have no single JSON form.
    kwargs: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("se", mode="before")
    @classmethod
    def _se_shorthand(cls, v):
        """`se: bump` or `se: true` in a spec mean that variant with default options."""
        if v is True:
            return {}
        return {"variant": v} if isinstance(v, str) else v


class DataCfg(_Strict):
    name: str = "cifar10-embedded"
    # Class-balanced subsets drawn with a fixed seed (the same images for every run seed, so paired
    # comparisons stay paired); the data label records the sizes.
    train_subset: Optional[int] = Field(None, ge=1)
    test_subset: Optional[int] = Field(None, ge=1)
    # crop_flip: random crop with 4-pixel padding + horizontal flip (He et al. CIFAR recipe);
    # rrc_flip: RandomResizedCrop(image_size) + flip, eval resize(image_size*8/7) + center crop (004's
    # ResNet-18 recipe at 224, and the ImageNet recipe); none: normalization only.
    augment: Literal["crop_flip", "rrc_flip", "none"] = "crop_flip"
    image_size: Optional[int] = Field(None, ge=8)  # None: native size
    # Cutout (DeVries & Taylor 2017) after `augment`, training only: the side of the one square zeroed per
    # image (16 for CIFAR-10); None: off. Left out of the dump while off, so no earlier run id changes.
    cutout: Optional[int] = Field(None, ge=1)

    @model_serializer(mode="wrap")
    def _omit_cutout_when_off(self, handler):
        data = handler(self)
        if isinstance(data, dict) and data.get("cutout") is None:
            data.pop("cutout", None)
        return data


class OptimCfg(_Strict):
    name: Literal["sgd", "adadelta"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0)
    nesterov: bool = False
    weight_decay: float = Field(1e-4, ge=0)
    wd_exclude_bn_bias: bool = False
    schedule: Literal["multistep", "step", "cosine", "constant"] = "multistep"
    milestones: tuple[float, ...] = (0.5, 0.75)  # multistep: fractions of the epochs
    gamma: float = Field(0.1, gt=0)  # multistep / step factor
    step_epochs: int = Field(1, ge=1)  # step: decay every n epochs (004: x0.7 every epoch)
    warmup_epochs: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class ExecutionCfg(_Strict):
    """How to run, not what: excluded from run_id, recorded in env.json."""

    device: str = "auto"  # auto: cuda if available, else cpu
    threads: Optional[int] = Field(None, ge=1)  # CPU intra-op threads; None: all cores
    data_path: Optional[str] = None  # archive/root for datasets that need one
    download: bool = False  # let torchvision download cifar10/cifar100/svhn into data_path
    cache_dir: Optional[str] = None
    num_workers: int = Field(2, ge=0)  # DataLoader workers for ImageFolder data
    progress: bool = True
    compile: bool = False  # torch.compile (same numbers up to float tolerance)
    deterministic: bool = True  # deterministic algorithms where the device allows
    # Data-parallel runs (torchrun, SLURM with several GPUs): BatchNorm statistics over the global batch
    # (SyncBatchNorm, CUDA only) instead of each process's share of it.
    sync_bn: bool = False
    # The SE excitation's form (sebench.layers.fused: linear, conv1x1, functional, mm); auto: the
    # device's default. Same parameters and numbers within float tolerance, so not in the run id.
    se_form: Form = "auto"


class BenchmarkCfg(_Strict):
    """How the runner measures inference throughput after training (recorded with the figure)."""

    batch_size: int = Field(64, ge=1)
    warmup: int = Field(2, ge=0)
    iters: int = Field(5, ge=1)


class RunConfig(_Strict):
    experiment: str = "adhoc"
    profile: str = "adhoc"
    labels: dict[str, str] = Field(default_factory=dict)  # sweep axis -> value label, for reports
    model: ModelCfg
    data: DataCfg = Field(default_factory=DataCfg)
    optim: OptimCfg = Field(default_factory=OptimCfg)
    epochs: int = Field(..., ge=1)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    seed: int = Field(0, ge=0, lt=2**63)  # torch.manual_seed takes 64 bits
    # Autocast dtype: bf16/fp16 on CUDA; bf16 on a CPU with native bf16 (else refused: engine.builders.resolve_amp)
    amp: Literal["off", "bf16", "fp16"] = "off"
    channels_last: bool = False
    benchmark: BenchmarkCfg = Field(default_factory=BenchmarkCfg)
    execution: ExecutionCfg = Field(default_factory=ExecutionCfg)

    def identity(self) -> dict:
        """The content that defines the numbers: everything but how it is executed and measured after
        training (`execution`, `benchmark`) and the report's labels."""
        return self.model_dump(mode="json", exclude={"execution", "benchmark", "labels"})

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------------------
# Experiment specs: one YAML file per source table (experiments/*.yaml), expanded into RunConfigs.
# --------------------------------------------------------------------------------------------------------

MetricName = Literal["top1_err", "top5_err", "top1_acc", "top5_acc", "test_loss", "params_m", "gflops"]


class SourceRef(_Strict):
    """The source table a spec reproduces: the source text's file (shared/seeds/, e.g.
    003_a73290d79b60d9ae.txt), table name, the reference CSV that holds it, and which of its columns holds
    each metric (``{column}`` stands for the column axis's `ref`, e.g. "{column} top-1 err." -> "SENet
    top-1 err."). The file was once keyed `seed`, which still reads, with a deprecation warning."""

    file: str
    table: str
    reference: Optional[str] = None  # file under results/reference/
    metrics: dict[MetricName, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _old_seed_key(cls, data):
        """`seed:` named the source file before "seed" meant only a random seed: read it, and say so."""
        if isinstance(data, dict) and "seed" in data and "file" not in data:
            warnings.warn("spec key source.seed is deprecated: name the source text's file source.file",
                          DeprecationWarning, stacklevel=2)
            data = {("file" if k == "seed" else k): v for k, v in data.items()}
        return data


class SweepValue(_Strict):
    """One value of a sweep axis: a label, the settings it makes (dotted keys into a RunConfig), and
    where the source's table has it (`ref`: its row or column label there)."""

    label: str
    set: dict[str, Any] = Field(default_factory=dict)
    baseline: bool = False
    # The axis's other variants are also compared with this value, in delta columns and a Holm family of
    # their own (e.g. SE in one stage only vs SE in all stages, besides each against no SE).
    second_baseline: bool = False
    pending: Optional[str] = None  # why this row cannot run yet (shown by plan and report)
    ref: Optional[str] = None


class SweepAxis(_Strict):
    axis: str
    ref: Optional[Literal["row", "column"]] = None  # how the source's table lays this axis out
    values: list[SweepValue] = Field(..., min_length=1)


class Profile(_Strict):
    """Overrides on the base: `set` (dotted keys), `seeds`, and replacement values for whole axes."""

    description: str = ""
    set: dict[str, Any] = Field(default_factory=dict)
    seeds: Optional[list[int]] = Field(None, min_length=1)
    sweep: dict[str, list[SweepValue]] = Field(default_factory=dict)


# Names that become folders of the store (experiment = spec name; profile names): one path component.
SAFE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.+=-]*$"


class Spec(_Strict):
    name: str = Field(..., pattern=SAFE_NAME)
    title: str
    source: list[SourceRef] = Field(..., min_length=1)
    description: str = ""
    notes: list[str] = Field(default_factory=list)  # recipe choices the source does not state, etc.
    # TOST margin per metric, in its units (points, loss); unset: sebench.report.verdicts.DEFAULT_MARGINS
    equivalence_margin: dict[MetricName, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    base: dict[str, Any]
    seeds: list[int] = Field(..., min_length=1)
    sweep: list[SweepAxis] = Field(default_factory=list)
    profiles: dict[Annotated[str, Field(pattern=SAFE_NAME)], Profile] = Field(..., min_length=1)
    slurm: Optional[SlurmCfg] = None  # defaults for --launcher slurm
    # The most runs one profile may expand to (None: MAX_RUNS); `--max-runs N` on plan/run sets it too.
    max_runs: Optional[int] = Field(None, ge=1)
    path: str = ""  # the file it came from (set by load_spec)


class SlurmCfg(_Strict):
    """Where `sebench run --launcher slurm` submits (CLI options override these). One array task per run;
    a run gets nodes x gpus_per_node processes (data-parallel when more than one)."""

    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time: int = Field(24 * 60, ge=1)  # minutes per job (a preempted or timed-out job requeues and resumes)
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(1, ge=0)
    cpus_per_task: Optional[int] = Field(None, ge=1)
    mem_gb: Optional[int] = Field(None, ge=1)
    constraint: Optional[str] = None
    array_parallelism: int = Field(64, ge=1)  # array tasks running at once


class PendingRow(BaseModel):
    """A combination of sweep values that cannot run yet, and why."""

    labels: dict[str, str]
    reason: str


PROFILE_NAMES_HINT = "paper (the source's recipe), quick (CPU-sized), smoke (seconds, for tests)"
_SPEC_KEYS = set(Spec.model_fields) - {"path"} | {"include"}


def _yaml_load(path: Path, where: str) -> dict:
    import yaml

    if not path.is_file():
        raise UserError(f"spec file not found: {path}", where=where)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start})", where=str(path),
                        fix="save the spec as UTF-8") from None
    except OSError as exc:
        raise UserError(f"cannot read the spec ({exc.strerror or exc})", where=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise UserError("the YAML is nested too deeply", where=str(path), fix="flatten the spec") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"YAML syntax error{at}: {problem}", where=str(path),
                        fix="fix the YAML (indentation, colons, quotes)") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"a spec must be a mapping of keys, got {type(data).__name__}", where=str(path))
    _check_keys(data, str(path))
    return data


MAX_DEPTH = 50  # no spec needs more; deeper documents are refused before anything recurses over them
MAX_VALUES = 100_000  # values after YAML aliases are expanded (a few thousand in the largest spec)


def _check_keys(node: Any, where: str, at: tuple = (), depth: int = 0, budget: Optional[list] = None) -> None:
    """Every mapping key is text, nesting stays shallow and aliases do not expand into millions of values
    (a "billion laughs" document). YAML reads `1:`, `null:` and (YAML 1.1) `yes:`/`no:`/`on:`/`off:` as
    other types, which no spec field can be."""
    budget = budget if budget is not None else [MAX_VALUES]
    budget[0] -= 1
    if budget[0] < 0:
        raise UserError(f"the YAML expands to more than {MAX_VALUES} values (through aliases?)", where=where,
                        fix="write the spec without repeated aliases")
    if depth > MAX_DEPTH:
        raise UserError(f"the YAML is nested more than {MAX_DEPTH} levels deep", where=where,
                        field=".".join(map(str, at[:5])) + "...", fix="flatten the spec")
    if isinstance(node, dict):
        for k, v in node.items():
            if not isinstance(k, str):
                raise UserError(f"key {k!r} is a {type(k).__name__}, not text", where=where,
                                field=".".join(map(str, at)) or None,
                                fix="quote it (YAML reads 1, null, yes/no and on/off as other types)")
            _check_keys(v, where, (*at, k), depth + 1, budget)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_keys(v, where, (*at, i), depth + 1, budget)


def deep_merge(base: dict, over: dict) -> dict:
    """Recursive dict merge: `over` wins; nested dicts merge; other values (lists too) replace."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def set_dotted(cfg: dict, key: str, value: Any) -> dict:
    """Apply one `a.b.c: value` setting to a nested dict (dicts merge, None clears)."""
    parts = key.split(".")
    node = cfg
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    last = parts[-1]
    node[last] = (deep_merge(node[last], value) if isinstance(value, dict) and isinstance(node.get(last), dict)
                  else value)
    return cfg


def _read_with_includes(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise UserError(f"include cycle: {cycle}", where=str(chain[-1]), field="include",
                        fix="remove one of the includes")
    data = _yaml_load(path, where=str(chain[-1]) if chain else "spec")
    includes = data.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise UserError("include must be a file name or a list of them", where=str(path), field="include")
    merged: dict = {}
    for inc in includes:
        inc_path = path.parent / inc
        if not inc_path.is_file():
            raise UserError(f"included file not found: {inc_path}", where=str(path), field="include",
                            fix="paths are relative to the including file")
        merged = deep_merge(merged, _read_with_includes(inc_path, (*chain, path)))
    return deep_merge(merged, data)


def _check_store_names(data: dict, where: str) -> None:
    """The spec's name and its profile names become folders of the store (results/runs/<name>/,
    results/<profile>/): each must be one plain path component, so no spec writes outside the store."""
    names = [("name", data.get("name"))]
    if isinstance(data.get("profiles"), dict):
        names += [(f"profiles.{k}", k) for k in data["profiles"]]
    for field, value in names:
        if isinstance(value, str) and not re.fullmatch(SAFE_NAME, value):
            raise UserError(f"{value!r} cannot name a folder of the store", where=where, field=field,
                            fix="use letters, digits and _ . + = - (not starting with '.' or '-'), no '/'")


def _pydantic_error(exc: ValidationError, where: str, root: type[BaseModel]) -> UserError:
    """The first validation error as one UserError: the field's dotted path, and for an unknown key the
    keys that are allowed there."""
    e = exc.errors()[0]
    loc = [p for p in e["loc"] if not isinstance(p, int)]
    msg = e["msg"].replace("Value error, ", "")
    if e["type"] == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        allowed = f" (allowed: {', '.join(k for k in parent.model_fields if k != 'path')})" if parent else ""
        msg = f"unknown key{allowed}"
    elif e["type"] == "literal_error":
        msg = msg.replace("Input should be", "allowed:")
    return UserError(msg, where=where, field=".".join(map(str, loc)) or None)


def _model_at(model: Optional[type[BaseModel]], loc: list) -> Optional[type[BaseModel]]:
    """The pydantic model class that an error location points into."""
    def models_in(ann):
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield ann
        for arg in getattr(ann, "__args__", ()):
            yield from models_in(arg)

    for part in loc:
        field = model.model_fields.get(part) if model is not None else None
        model = next(models_in(field.annotation), None) if field is not None else None
    return model


def load_spec(path: str | Path, max_runs: Optional[int] = None) -> Spec:
    """Read a spec (resolving includes), validate its schema strictly, and check that every run it
    declares would build (models, datasets, SE options), so a mistake surfaces before anything runs.
    `max_runs` (the CLI's --max-runs) replaces the spec's own cap on runs per profile."""
    path = Path(path)
    data = _read_with_includes(path)
    data.setdefault("name", path.stem)
    if max_runs is not None:
        data["max_runs"] = max_runs
    if isinstance(data.get("source"), dict):
        data["source"] = [data["source"]]
    if "path" in data:  # set by the loader, not by the spec
        raise UserError(f"unknown key (allowed: {', '.join(sorted(_SPEC_KEYS))})", where=str(path), field="path")
    _check_store_names(data, str(path))
    try:
        spec = Spec.model_validate({**data, "path": str(path)})
    except ValidationError as exc:
        raise _pydantic_error(exc, str(path), Spec) from None
    axes = [a.axis for a in spec.sweep]
    if len(set(axes)) != len(axes):
        raise UserError(f"sweep axes repeat: {axes}", where=str(path), field="sweep")
    value_lists = [(f"sweep.{a.axis}", a.axis, a.values) for a in spec.sweep] + [
        (f"profiles.{pname}.sweep.{axis}", axis, values) for pname, prof in spec.profiles.items()
        for axis, values in prof.sweep.items()]
    for field, axis, values in value_lists:
        labels = [v.label for v in values]
        if len(set(labels)) != len(labels):
            twice = sorted({label for label in labels if labels.count(label) > 1})
            raise UserError(f"labels repeat in one axis: {twice}", where=str(path), field=field,
                            fix="give every value of an axis its own label")
        _check_baselines(spec, field, axis, values, str(path))
    for pname, prof in spec.profiles.items():
        unknown = set(prof.sweep) - set(axes)
        if unknown:
            raise UserError(f"profile {pname!r} replaces unknown sweep axis {sorted(unknown)}", where=str(path),
                            field=f"profiles.{pname}.sweep", fix=f"axes: {', '.join(axes) or 'none'}")
        empty = sorted(axis for axis, values in prof.sweep.items() if not values)
        if empty:
            raise UserError(f"profile {pname!r} replaces axis {empty} with no values", where=str(path),
                            field=f"profiles.{pname}.sweep", fix="give at least one value, or leave the axis out")
        marked = [a.axis for a in profile_axes(spec, pname) if any(v.baseline for v in a.values)]
        if len(marked) > 1:  # a table's deltas run along one axis; another axis's baseline would be ignored
            raise UserError(f"more than one axis marks a baseline in profile {pname!r}: {marked}", where=str(path),
                            field="sweep", fix="mark `baseline: true` on the values of one axis only")
        expand(spec, pname)  # validates every run of every profile
    return spec


def _check_baselines(spec: Spec, field: str, axis_name: str, values: list[SweepValue], where: str) -> None:
    """At most one baseline and one second baseline in an axis, on different values; a second baseline
    only beside a baseline, and not on a column axis (whose deltas are columns already)."""
    for flag in ("baseline", "second_baseline"):
        marked = [v.label for v in values if getattr(v, flag)]
        if len(marked) > 1:
            raise UserError(f"more than one value is marked `{flag}: true`: {marked}", where=where, field=field,
                            fix=f"mark one value of the axis `{flag}: true`")
    second = next((v.label for v in values if v.second_baseline), None)
    if second is None:
        return
    if any(v.baseline and v.second_baseline for v in values):
        raise UserError(f"{second!r} is marked both `baseline` and `second_baseline`", where=where, field=field,
                        fix="a second baseline is another value than the baseline")
    if not any(v.baseline for v in values):
        raise UserError(f"{second!r} is a second baseline in an axis without a baseline", where=where,
                        field=field, fix="mark the axis's first baseline `baseline: true`, or drop "
                                         "`second_baseline`")
    if any(a.axis == axis_name and a.ref == "column" for a in spec.sweep):
        raise UserError(f"{second!r} is a second baseline in the column axis {axis_name!r}", where=where,
                        field=field, fix="put the second baseline in a row axis (its deltas are extra columns)")


def profile_axes(spec: Spec, profile: str) -> list[SweepAxis]:
    """The spec's sweep axes with the values `profile` gives them (a profile may narrow an axis)."""
    prof = spec.profiles[profile]
    return [SweepAxis(axis=a.axis, ref=a.ref, values=prof.sweep.get(a.axis, a.values)) for a in spec.sweep]


MAX_RUNS = 10_000  # runs per profile: the largest spec here has a few hundred; beyond, a typo is likelier


def count_runs(spec: Spec, profile: str) -> int:
    """How many runs `profile` expands to (pending rows included), from the axes' lengths: the product
    is never built, so a sweep of 1,000 x 1,000 x 1,000 values is counted at once."""
    n = len(spec.profiles[profile].seeds or spec.seeds)
    for axis in profile_axes(spec, profile):
        n *= len(axis.values)
    return n


def check_sweep_size(spec: Spec, profile: str) -> None:
    """UserError when `profile` expands to more runs than the cap (spec.max_runs, else MAX_RUNS)."""
    cap = spec.max_runs or MAX_RUNS
    n = count_runs(spec, profile)
    if n > cap:
        axes = profile_axes(spec, profile)
        sizes = " x ".join(f"{len(a.values)} {a.axis}" for a in axes)
        seeds = len(spec.profiles[profile].seeds or spec.seeds)
        raise UserError(f"profile {profile!r} expands to {n:,} runs ({sizes} x {seeds} seeds), more than the "
                        f"cap of {cap:,}", where=spec.path, field="sweep",
                        fix="narrow the sweep's axes (or the profile's), or raise the cap with --max-runs N "
                            "or the spec's max_runs")


def expand(spec: Spec, profile: str, overrides: Optional[dict[str, Any]] = None
           ) -> tuple[list[RunConfig], list[PendingRow]]:
    """spec x profile -> frozen RunConfigs (sweep product x seeds), plus the rows marked pending.
    `overrides` (dotted keys, e.g. from `--set`) apply last, so they are part of every run's identity."""
    if profile not in spec.profiles:
        raise choice_error("profile", profile, spec.profiles, where=spec.path, field="--profile")
    prof = spec.profiles[profile]
    base = copy.deepcopy(spec.base)
    for k, v in prof.set.items():
        set_dotted(base, k, v)
    axes = profile_axes(spec, profile)
    seeds = prof.seeds or spec.seeds
    check_sweep_size(spec, profile)
    runs: list[RunConfig] = []
    pending: list[PendingRow] = []
    for combo in itertools.product(*(a.values for a in axes)):
        labels = {a.axis: v.label for a, v in zip(axes, combo)}
        reasons = [v.pending for v in combo if v.pending]
        if reasons:
            pending.append(PendingRow(labels=labels, reason="; ".join(reasons)))
            continue
        cfg = copy.deepcopy(base)
        for v in combo:
            for k, val in v.set.items():
                set_dotted(cfg, k, copy.deepcopy(val))
        for k, val in (overrides or {}).items():
            set_dotted(cfg, k, copy.deepcopy(val))
        where = f"{spec.path} (profile {profile!r}, {', '.join(f'{k}={v}' for k, v in labels.items()) or 'base'})"
        for seed in seeds:
            runs.append(_run_config(cfg, spec.name, profile, labels, seed, where))
    seen: dict[str, RunConfig] = {}
    for rc in runs:
        other = seen.setdefault(rc.run_id, rc)
        if other is not rc:  # two rows that would train the same thing (and share one run directory)
            raise UserError(f"rows {dict(other.labels)} and {dict(rc.labels)} (seed {rc.seed}) make the same "
                            "run", where=f"{spec.path} (profile {profile!r})", field="sweep",
                            fix="make their settings differ, or drop one (a --set of the axis's key also "
                                "makes them equal)")
    return runs, pending


def _run_config(cfg: dict, experiment: str, profile: str, labels: dict, seed: int, where: str) -> RunConfig:
    for key in ("experiment", "profile", "labels", "seed"):
        if key in cfg:
            raise UserError(f"'{key}' is set by the spec itself, not in base/set", where=where, field=key)
    try:
        rc = RunConfig(**cfg, experiment=experiment, profile=profile, labels=labels, seed=seed)
        rc.run_id  # noqa: B018  (hashes the JSON form: a value without one fails here, not in the runner)
    except ValidationError as exc:
        raise _pydantic_error(exc, where, RunConfig) from None
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise UserError(f"a value has no JSON form ({exc})", where=where) from None
    _check_buildable(rc, where)
    return rc


def _check_buildable(rc: RunConfig, where: str) -> None:
    """Names a spec may get wrong, checked without building anything heavy."""
    from sebench.data.registry import get_info
    from sebench.models import check_options, get_entry, stage_ids

    def again(err: UserError, field: str) -> UserError:
        return UserError(err.message, where=where, field=field, fix=err.fix)

    try:
        get_entry(rc.model.name)
    except UserError as err:
        raise again(err, "model.name") from None
    try:  # an unknown constructor option fails here, not as a TypeError in every run
        check_options(rc.model.name, rc.model.kwargs)
    except UserError as err:
        raise again(err, "model.kwargs") from None
    try:
        get_info(rc.data.name)
    except UserError as err:
        raise again(err, "data.name") from None
    if rc.model.se_stages is not None:
        allowed = stage_ids(rc.model.name)
        bad = [s for s in rc.model.se_stages if s not in allowed]
        if bad or not rc.model.se_stages:
            raise UserError(f"{rc.model.name} has no stage(s) {bad or '(empty list)'}", where=where,
                            field="model.se_stages", fix=f"allowed: {', '.join(map(str, allowed))}")


def find_spec(name_or_path: str, folder: str | Path = "experiments") -> Path:
    """A spec file from its path or its name (`cifar10_se_vs_baseline` -> experiments/<name>.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = Path(folder) / f"{path.stem}.yaml"
    if path.suffix in ("", ".yaml") and candidate.is_file() and len(path.parts) == 1:
        return candidate
    names = ", ".join(p.stem for p in list_specs(folder)) or f"none in {folder}/"
    raise UserError(f"spec not found: {name_or_path}", where=str(name_or_path), fix=f"specs: {names}")


def list_specs(folder: str | Path = "experiments") -> list[Path]:
    """Every spec in a folder (files starting with '_' are shared includes, not specs)."""
    return sorted(p for p in Path(folder).glob("*.yaml") if not p.name.startswith("_"))
