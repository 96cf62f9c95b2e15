"""results/reference/*.csv: the seeds' reference numbers, checked against the seed texts themselves.

The checks that read the seed texts need the seeds folder: $SEBENCH_SEEDS, or shared/seeds in or beside the
repository; they are skipped (with the reason) when it cannot be found.
"""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path

import pytest

from sebench.errors import UserError
from sebench.report.reference import COLUMNS, DEFAULT_ROOT, load_reference, reference_value

REPO = Path(__file__).resolve().parents[1]
REF = REPO / "results" / "reference"
CSVS = sorted(REF.glob("*.csv"))
S3 = "003_a73290d79b60d9ae.txt"
S4 = "004_7959756dcf211b7d.txt"


def _seeds_dir() -> Path | None:
    candidates = [os.environ.get("SEBENCH_SEEDS"), REPO / "shared" / "seeds", REPO.parent / "shared" / "seeds"]
    for c in candidates:
        if c and (Path(c) / S3).is_file():
            return Path(c)
    return None


SEEDS = _seeds_dir()
needs_seeds = pytest.mark.skipif(SEEDS is None, reason="seed texts not found (set SEBENCH_SEEDS)")


def raw_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def seed_text(name: str) -> str:
    return (SEEDS / name).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------------ structure

def test_default_root_is_the_repos_results_reference():
    assert DEFAULT_ROOT == REF
    assert len(CSVS) >= 17


@pytest.mark.parametrize("path", CSVS, ids=lambda p: p.name)
def test_every_csv_has_the_columns_and_sane_cells(path):
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert header == COLUMNS
    rows = raw_rows(path)
    assert rows, "empty table"
    keys = [(r["row"], r["column"]) for r in rows]
    assert len(keys) == len(set(keys)), "a (row, column) cell appears twice"
    for r in rows:
        assert r["source_file"] and r["source_table"] and r["row"] and r["column"], r
        if r["value"] == "":
            assert r["note"].strip(), f"empty value without a note: {r}"
        else:
            float(r["value"])  # a plain decimal
            assert re.fullmatch(r"\d+(\.\d+)?", r["value"]), r["value"]
            assert r["unit"] and r["metric"], r


def test_no_nan_without_a_note():
    df = load_reference()
    nan = df[df["value"].isna()]
    assert (nan["note"].str.strip() != "").all()
    assert len(nan) == 1  # only the garbled NoSqueeze line


def test_readme_documents_every_file():
    readme = (REF / "README.md").read_text(encoding="utf-8")
    for p in CSVS:
        assert p.name in readme, p.name


# ------------------------------------------------------------------------------------------------ spot checks

SPOT = [
    ("003_imagenet", "ResNet-50 [13]", "SENet top-1 err.", 23.29),
    ("003_imagenet", "ResNet-50 [13]", "SENet top-1 err. improvement", 1.51),
    ("003_imagenet", "ResNet-50 [13]", "re-implementation GFLOPs", 3.86),
    ("003_imagenet", "Inception-ResNet-v2 [21]", "original top-1 err.", 19.9),
    ("003_imagenet", "VGG-16 [11]", "SENet top-5 err. improvement", 1.11),
    ("003_mobile", "MobileNet [64]", "SENet MFLOPs", 572),
    ("003_mobile", "ShuffleNet [65]", "re-implementation Params", 1.8),
    ("003_mobile", "ShuffleNet [65]", "SENet top-1 err. improvement", 1.6),
    ("003_cifar10", "ResNet-110 [14]", "SENet", 5.21),
    ("003_cifar10", "Shake-Shake 26 2x96d [68] + Cutout [69]", "original", 2.56),
    ("003_cifar100", "WRN-16-8 [67]", "original", 20.43),
    ("003_ablation_reduction", "32", "Params", 26.9),
    ("003_ablation_reduction", "original", "top-1 err.", 23.30),
    ("003_ablation_squeeze", "Max", "top-1 err.", 22.57),
    ("003_ablation_excitation", "Tanh", "top-1 err.", 23.00),
    ("003_ablation_stages", "SE_Stage_4", "GFLOPs", 3.86),
    ("003_ablation_stages", "SE_Stage_4", "Params", 26.4),
    ("003_ablation_integration", "SE-Identity", "top-5 err.", 6.15),
    ("003_ablation_se3x3", "SE_3×3", "Params", 25.8),
    ("003_nosqueeze", "NoSqueeze", "GFLOPs", 4.27),
    ("003_complexity", "ResNet-101", "GFLOPs", 7.58),
    ("003_complexity", "SE-ResNet-50", "relative GFLOPs increase over ResNet-50", 0.26),
    ("001_timing", "SE-ResNet-50", "GPU training time per forward+backward pass", 209),
    ("001_timing", "ResNet-50", "CPU inference time per image", 164),
    ("000_effects", "ResNet-50 on ImageNet, with SE", "accuracy", 77.2),
    ("000_effects", "ResNet-50 on ImageNet, without SE", "training throughput", 4500),
    ("002_claims", "modified ResNeXt (SENet) on ImageNet", "top-5 error", 3.79),
    ("004_cnn3_cifar10", "Bump module", "Accuracy", 72.65),
    ("004_cnn3_cifar10", "Default", "Loss", 0.8091),
    ("004_resnet18_cifar10", "Slow squeeze and slow excite", "Top-1", 76.020),
    ("004_resnet18_cifar10", "Bump module", "Top-1", 76.020),
    ("004_resnet18_cifar100", "SE module", "Top-5", 93.190),
    ("004_resnet18_svhn", "Default", "Accuracy", 98.851),
    ("004_resnet18_svhn", "Squeeze and slow excite", "Loss", 92.244),
    ("004_claims", "proposed modules on SVHN", "maximum enhancement", 1.01),
    ("settings", "latent_channels", "suggested value", 64),
    ("settings", "min_channels", "suggested value", 128),
]


@pytest.mark.parametrize("file,row,column,expected", SPOT)
def test_spot_check(file, row, column, expected):
    assert reference_value(file, row, column) == pytest.approx(expected)


def test_every_table_is_spot_checked():
    assert {p.stem for p in CSVS} <= {s[0] for s in SPOT}


def test_units_and_metrics_say_error_or_accuracy():
    df = load_reference()
    imnet = df[df["file"] == "003_imagenet"]
    assert set(imnet.loc[imnet["column"].str.endswith("err."), "unit"]) == {"% error"}
    eff = df[(df["file"] == "000_effects") & (df["column"] == "accuracy")]
    assert set(eff["unit"]) == {"% accuracy"}  # 76.1 -> 77.2 is accuracy, not error
    r18 = df[df["file"] == "004_resnet18_cifar10"]
    assert set(r18["metric"]) == {"top1_acc", "top5_acc"}


def test_dash_cells_have_no_value():
    assert reference_value("003_imagenet", "ResNeXt-50 [19]", "original top-5 err.") is None
    assert reference_value("003_imagenet", "VGG-16 [11]", "original top-1 err.") is None
    # every "original top-5 err." cell of the mobile table is "-", so the column has no cells at all
    with pytest.raises(UserError, match="no column"):
        reference_value("003_mobile", "MobileNet [64]", "original top-5 err.")


def test_dagger_is_noted():
    df = load_reference("003_imagenet")
    ir = df[(df["row"] == "Inception-ResNet-v2 [21]") & df["column"].str.startswith("original")]
    assert len(ir) == 2 and ir["note"].str.contains("†").all()


def test_svhn_loss_column_is_flagged():
    df = load_reference("004_resnet18_svhn")
    loss = df[df["column"] == "Loss"]
    assert len(loss) == 6 and loss["note"].str.contains("not losses").all()
    assert (loss["value"] > 90).all()


def test_improvements_equal_reimplementation_minus_senet():
    for name in ("003_imagenet", "003_mobile"):
        df = load_reference(name)
        for _, r in df[df["column"].str.endswith("improvement")].iterrows():
            stat = r["column"].removeprefix("SENet ").removesuffix(" improvement")
            reimpl = reference_value(name, r["row"], f"re-implementation {stat}")
            senet = reference_value(name, r["row"], f"SENet {stat}")
            assert reimpl - senet == pytest.approx(r["value"], abs=0.006), (name, r["row"], stat)


# ------------------------------------------------------------------------------------------------ garbled

def test_garbled_nosqueeze_line_is_empty_with_a_note():
    df = load_reference("003_nosqueeze")
    g = df[df["row"] == "(garbled line)"]
    assert len(g) == 1
    assert math.isnan(g["value"].iloc[0])
    assert "THOOGUCCEC 44.00 0.00 7.41 20.1171" in g["note"].iloc[0]
    assert reference_value("003_nosqueeze", "(garbled line)", "(whole line)") is None
    # nothing from the garbled line leaked into a real cell
    assert not df["value"].isin([44.00, 0.00, 7.41, 20.1171]).any()


# ------------------------------------------------------------------------------------------------ API

def test_load_all_has_file_column_and_one_table():
    df = load_reference()
    assert list(df.columns) == ["file"] + COLUMNS
    assert set(df["file"]) == {p.stem for p in CSVS}
    one = load_reference("003_cifar10.csv")
    assert len(one) == 8 and list(one.columns) == COLUMNS
    assert one["row"].map(type).eq(str).all()
    red = load_reference(REF / "003_ablation_reduction.csv")
    assert "16" in set(red["row"])  # row labels stay strings


def test_unknown_names_raise_user_error_listing_options():
    with pytest.raises(UserError, match="003_imagenet"):
        load_reference("nope")
    with pytest.raises(UserError, match="ResNet-50 \\[13\\]"):
        reference_value("003_imagenet", "ResNet-50", "SENet top-1 err.")
    with pytest.raises(UserError, match="SENet top-1 err."):
        reference_value("003_imagenet", "ResNet-50 [13]", "top-1")


def test_root_override(tmp_path):
    (tmp_path / "x.csv").write_text(",".join(COLUMNS) + "\ns.txt,T,a,b,1.50,%,m,\ns.txt,T,a,c,,,,why\n")
    assert reference_value("x", "a", "b", root=tmp_path) == 1.5
    assert reference_value("x", "a", "c", root=tmp_path) is None
    assert list(load_reference(root=tmp_path)["file"]) == ["x", "x"]
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="columns"):
        load_reference("bad", root=tmp_path)


# ------------------------------------------------------------------------------------------------ vs the seeds

def _occurs(number: str, text: str) -> bool:
    """`number` occurs in `text` as a whole number, format-aware: 76.020 does not match 76.02, 3 not 3.86."""
    return re.search(r"(?<![\d.])" + re.escape(number) + r"(?!\.?\d)", text) is not None


@needs_seeds
@pytest.mark.parametrize("path", CSVS, ids=lambda p: p.name)
def test_every_value_appears_literally_in_its_seed(path):
    for r in raw_rows(path):
        assert (SEEDS / r["source_file"]).is_file(), r["source_file"]
        if r["value"]:
            assert _occurs(r["value"], seed_text(r["source_file"])), (r["row"], r["column"], r["value"])


def test_occurs_is_format_aware():
    assert _occurs("76.020", "| 76.020 | 97.700 |")
    assert not _occurs("76.02", "| 76.020 |")
    assert not _occurs("3", "3.86 GFLOPs")
    assert _occurs("45.7", "45.7M")


_MARKUP = re.compile(r"<sup>†</sup>|†|</?b>|\$|_\{|\}")

# the part of the seed each table sits in: (seed, start marker, end marker)
SECTIONS = {
    "003_mobile": (S3, "orig\tinal", "TABLE 4"),
    "003_cifar10": (S3, "TABLE 4", "TABLE 5"),
    "003_cifar100": (S3, "TABLE 5", "ABLATION STUDY"),
    "003_ablation_reduction": (S3, "## Reduction Ratio", "# Squeeze Operator"),
    "003_ablation_squeeze": (S3, "# Squeeze Operator", "# **Excitation Operator**"),
    "003_ablation_excitation": (S3, "# **Excitation Operator**", "# Different Stages"),
    "003_ablation_stages": (S3, "# Different Stages", "# Integration strategy"),
    "003_ablation_integration": (S3, "# Integration strategy", "(b) Standard SE block"),
    "003_ablation_se3x3": (S3, "(e) SE-Identity block", "Role of SE Blocks"),
    "003_nosqueeze": (S3, "## Effect of Squeeze", "#### Role of Excitation"),
    "004_cnn3_cifar10": (S4, "Method | Loss | Accuracy |", "There are other variants"),
    "004_resnet18_cifar10": (S4, "Methods | Top-1 | Top-5 |", "6.1 CIFAR - 100 results"),
    "004_resnet18_cifar100": (S4, "6.1 CIFAR - 100 results", "Table 3 represents"),
    "004_resnet18_svhn": (S4, "6.2 SVHN results", "From the results, the proposed"),
}


def _section(seed: str, start: str, end: str) -> str:
    text = seed_text(seed)
    i = text.index(start)
    return text[i:text.index(end, i)]


def _lines_for(label: str, text: str) -> list[list[str]]:
    """Number tokens (markup removed, "-" cells dropped) of every line whose first cell is `label`."""
    out = []
    for line in text.splitlines():
        for sep in ("\t", " | "):
            if line.startswith(label + sep):
                rest = _MARKUP.sub("", line[len(label):])
                out.append(re.findall(r"\d+(?:\.\d+)?", rest))
    return out


def _csv_tokens(name: str) -> dict[str, list[str]]:
    by_row: dict[str, list[str]] = {}
    for r in raw_rows(REF / f"{name}.csv"):
        if r["value"]:
            by_row.setdefault(r["row"], []).append(r["value"])
    return by_row


@needs_seeds
@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_table_rows_match_the_seed_line_by_line(name):
    seed, start, end = SECTIONS[name]
    section = _section(seed, start, end)
    for label, values in _csv_tokens(name).items():
        lines = _lines_for(label, section)
        assert len(lines) == 1, (label, lines)
        assert lines[0] == values, (label, lines[0], values)


@needs_seeds
def test_imagenet_table_printed_twice_and_both_copies_agree():
    text = seed_text(S3)
    for label, values in _csv_tokens("003_imagenet").items():
        lines = _lines_for(label, text)
        assert len(lines) == 2, label
        assert lines[0] == lines[1] == values, (label, lines)


@needs_seeds
def test_garbled_line_is_in_the_seed_where_noted():
    section = _section(*SECTIONS["003_nosqueeze"])
    assert re.search(r"THOOGUCCEC\s+44\.00\s+0\.00\s+7\.41\s+20\.1171", section)
