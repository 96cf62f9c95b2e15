"""Fuzzing the spec loader: hypothesis mutates valid specs (every file in experiments/ and a minimal one)
by deleting keys, changing types, putting random strings/ints/floats/None/lists/mappings at random paths,
adding unknown keys, breaking includes, and breaking the YAML text itself. Every case must end in a valid
plan (load_spec, then expand for every profile and the run id of every run) or in exactly one UserError:
never another exception type, never a hang.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sebench.errors import UserError
from sebench.spec import expand, list_specs, load_spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = list_specs(ROOT / "experiments")

MINIMAL = {
    "title": "minimal",
    "source": {"seed": "003_a73290d79b60d9ae.txt", "table": "T"},
    "base": {"model": {"name": "resnet20"}, "data": {"name": "synthetic"}, "epochs": 1},
    "seeds": [0],
    "sweep": [{"axis": "se", "values": [{"label": "none", "baseline": True, "set": {"model.se": None}},
                                         {"label": "SE", "set": {"model.se": {"reduction": 4}}}]}],
    "profiles": {"smoke": {"set": {"data.train_subset": 64}}},
}
SEEDS = [("minimal", MINIMAL)] + [(p.stem, yaml.safe_load(p.read_text())) for p in SPECS]

# Values that mean something somewhere in a spec, next to random ones.
MEANINGFUL = st.sampled_from([
    "resnet20", "resnet50", "cnn3", "cifar10", "synthetic", "imagefolder", "bump", "se", "avg", "max",
    "none", "sigmoid", "standard", "after_3x3", "multistep", "cosine", "sgd", "paper", "quick", "smoke",
    "model.se", "model.name", "data.name", "epochs", "experiment", "seed", "labels", "execution.device",
    "optim.lr", "model.se.reduction", "model.kwargs.x", "a..b", ".", "", "_base/cifar.yaml",
    "missing.yaml", "../../etc/passwd", "/dev/null", "include", "path", "1e309", "-1", "0", "nan",
])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), MEANINGFUL,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.one_of(MEANINGFUL, st.text(max_size=8), st.integers(-3, 3)),
                                            inner, max_size=3)),
    max_leaves=6,
)
KEYS = st.one_of(MEANINGFUL, st.text(max_size=10), st.integers(-2, 5), st.none(), st.booleans())

# Text that breaks or abuses YAML: python tags (safe_load must refuse them), tabs, unbalanced brackets,
# anchors, deep nesting, document markers, stray colons and quotes.
BAD_TEXT = st.sampled_from([
    "\tindent: tab\n", "key: [unclosed\n", "{a: 1\n", "]]]\n", ": : :\n", "'unterminated\n", "\"\\x\"\n",
    "!!python/object/apply:os.system ['echo pwned']\n", "x: !!python/object:builtins.object {}\n",
    "x: !!binary aGVsbG8=\n", "x: !!set {a, b}\n", "x: 2020-01-01\n", "&a [*a]\n", "x: *undefined\n",
    "---\n---\n", "...\n", "- a\n- b\n", "? [complex, key]\n: v\n", "x: " + "[" * 300 + "]" * 300 + "\n",
    "x: " + "{a: " * 200 + "1" + "}" * 200 + "\n", "\x00\x01\n", "\ufeffx: 1\n", "x: 1\ny: 2\nx: 3\n",
    "include: [_base/cifar.yaml, _base/cifar.yaml]\n", "include: fuzz.yaml\n", "include: {a: 1}\n",
    "include: [1, 2]\n", "include: _base\n", "include: /dev/null\n", "include: ../../../../etc/hostname\n",
    "path: /etc/passwd\n", "name: [x]\n", "slurm: {time: 0}\n", "slurm: []\n",
])


# YAML values with tags, aliases and special forms, put in place of a value of the document.
RAW_VALUES = st.sampled_from([
    "!!binary /////w==", "!!binary aGVsbG8=", "!!set {a, b}", "2020-01-01", "2020-01-01T10:00:00Z", ".nan",
    ".inf", "-.inf", "0x1F", "0o17", "~", "!!python/tuple [1, 2]", "!!python/name:os.system",
    "!!str 5", "!!int '7'", "!!float '1e3'", "&r [*r]", "yes", "off", "1_000", "12:30:00", "!!null ''",
    "[" + ", ".join(["&a [1, 2, 3, 4, 5, 6, 7, 8]"] + ["*a"] * 8) + "]", "{? [a, b]: c}", "!custom x",
])


def paths(node, prefix=()):
    """Every path (tuple of keys and indices) into a nested dict/list, the root included."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, (*prefix, i))


def get(node, path):
    for p in path:
        node = node[p]
    return node


@st.composite
def mutated_specs(draw):
    """(spec text or bytes, name of the seed spec, description of the mutations)."""
    name, seed = draw(st.sampled_from(SEEDS))
    doc = copy.deepcopy(seed)
    done, raws = [], []
    for _ in range(draw(st.integers(1, 3))):
        all_paths = list(paths(doc))
        deep = [p for p in all_paths if len(p) >= 2]
        # Mostly deep in the document (where expansion and the run schema are reached), sometimes anywhere.
        path = draw(st.sampled_from(deep if deep and draw(st.integers(0, 9)) < 8 else all_paths))
        kind = draw(st.sampled_from(["delete", "replace", "replace", "add_key", "retype", "setting",
                                     "setting", "include", "raw"]))
        done.append((kind, path))
        if kind == "setting":  # a dotted-key setting in some `set:` mapping (or base), random or meaningful
            sets = [p for p in all_paths if p and p[-1] in ("set", "base") and isinstance(get(doc, p), dict)]
            if sets:
                target = get(doc, draw(st.sampled_from(sets)))
                target[draw(st.one_of(MEANINGFUL, st.text(max_size=10)))] = draw(VALUES)
            continue
        if kind == "delete" and path:
            parent = get(doc, path[:-1])
            del parent[path[-1]]
        elif kind == "raw" and path:  # a placeholder, swapped for raw YAML text after dumping
            get(doc, path[:-1])[path[-1]] = f"__RAW{len(raws)}__"
            raws.append(draw(RAW_VALUES))
        elif kind in ("replace", "retype"):
            old = get(doc, path) if path else None
            if kind == "retype" and old is not None:  # same content, another type
                value = draw(st.sampled_from([str(old), [old], {"x": old}, None, 1, 1.5, True]))
            else:
                value = draw(VALUES)
            if path:
                get(doc, path[:-1])[path[-1]] = value
            else:
                doc = value
        elif kind == "add_key":
            target = get(doc, path)
            if isinstance(target, dict):
                target[draw(KEYS)] = draw(VALUES)
            elif isinstance(target, list):
                target.append(draw(VALUES))
        elif kind == "include" and isinstance(doc, dict):
            doc["include"] = draw(st.one_of(
                st.sampled_from(["_base/cifar.yaml", "_base/imagenet.yaml", "missing.yaml", "fuzz.yaml",
                                 "_base", "", "../", "_base/ablation.yaml"]),
                st.lists(st.sampled_from(["_base/cifar.yaml", "fuzz.yaml", "nope.yaml"]), max_size=3),
                VALUES))
    try:
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        text = repr(doc)
    for i, raw in enumerate(raws):
        text = text.replace(f"__RAW{i}__", raw)
    how = draw(st.sampled_from(["plain", "plain", "plain", "append", "insert", "truncate", "bytes"]))
    if how == "append":
        text += draw(BAD_TEXT)
    elif how == "insert":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.one_of(BAD_TEXT, st.text(max_size=6))) + text[at:]
    elif how == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    elif how == "bytes":
        return text.encode() + b"\nx: \xff\xfe\n", name, done + [how]
    return text, name, done + [how]


@pytest.fixture(scope="module")
def spec_folder(tmp_path_factory) -> Path:
    """A copy of experiments/ (for the shared includes) to write the mutated spec into."""
    folder = tmp_path_factory.mktemp("fuzz") / "experiments"
    shutil.copytree(ROOT / "experiments", folder)
    return folder


def plan_everything(path: Path) -> int:
    spec = load_spec(path)
    n = 0
    for profile in spec.profiles:
        runs, _ = expand(spec, profile)
        n += len({r.run_id for r in runs})
    return n


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=mutated_specs())
def test_mutated_specs_plan_or_fail_with_one_user_error(spec_folder, case):
    content, seed_name, mutations = case
    path = spec_folder / "fuzz.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    try:
        plan_everything(path)
    except UserError as err:
        assert err.render().strip()  # a message the CLI prints as its one line
    # Any other exception fails the test, with the seed spec and the mutations in hypothesis's report.


VALID = """title: t
source: {seed: s, table: T}
seeds: [0]
base: {model: {name: resnet20}, data: {name: synthetic}, epochs: 1}
sweep: [{axis: a, values: [{label: x, baseline: true}, {label: y, set: {model.se: bump}}]}]
profiles: {smoke: {}}
"""


@pytest.mark.parametrize("text, fragment", [
    # What the fuzzer found (each was a non-UserError exception, or a silent problem, before the fix):
    (VALID.encode() + b"notes: [\xff\xfe]\n", "not UTF-8"),  # UnicodeDecodeError
    ("0: null\n" + VALID, "key 0 is a int, not text"),  # TypeError: keywords must be strings
    (VALID.replace("profiles: {smoke: {}}", "profiles: {smoke: {sweep: {a: []}}}"), "with no values"),
    (VALID.replace("name: resnet20}", "name: resnet20, kwargs: {x: !!binary /////w==}}"), "JSON value"),
    (VALID.replace("label: y,", "label: x,"), "labels repeat"),  # two runs, one run directory
    (VALID.replace("{label: y, set: {model.se: bump}}", "{label: y}"), "make the same run"),
    ("name: ../../outside\n" + VALID, "cannot name a folder"),  # the store path would leave results/
    (VALID.replace("{smoke: {}}", "{'../x': {}}"), "cannot name a folder"),
    (VALID.replace("seeds: [0]", "seeds: [100000000000000000000000]"), "seeds|seed"),
    ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n" + VALID,
     "expands to more than"),  # a "billion laughs" document
    ("x: &r [*r]\n" + VALID, "nested more than"),  # a recursive alias
    ("title: t\nx: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),  # RecursionError in the parser
    # And the ones that already were UserErrors:
    ("!!python/object/apply:os.system ['echo pwned']\n", "constructor"),
    ("title: [unclosed\n", "YAML syntax error"),
    ("include: fuzz.yaml\n", "include cycle"),
])
def test_crashes_the_fuzzer_found_are_user_errors(spec_folder, text, fragment):
    path = spec_folder / "fuzz.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(UserError, match=fragment):
        plan_everything(path)


def test_the_valid_base_of_those_cases_plans(spec_folder):
    path = spec_folder / "fuzz.yaml"
    path.write_text(VALID)
    assert plan_everything(path) == 2
