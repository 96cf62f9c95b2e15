"""The source texts' reference numbers (results/reference/*.csv), with provenance.

Each CSV transcribes one table (or one passage of running text) of one seed, in long format: one row per
cell, columns `source_file, source_table, row, column, value, unit, metric, note`. An empty `value` means the
source cell is garbled or unreadable (the `note` says why); a cell that is empty or "-" in the source has no
row at all. See results/reference/README.md for the conventions.

    load_reference()                     # every file, concatenated, with a `file` column (the file's stem)
    load_reference("003_imagenet")       # one file by stem, file name, or path
    reference_value("003_imagenet", "ResNet-50 [13]", "SENet top-1 err.")   # -> 23.29
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd

from sebench.errors import UserError

COLUMNS = ["source_file", "source_table", "row", "column", "value", "unit", "metric", "note"]
# The first column's name before the source texts were called sources (they are shared/seeds/*.txt).
_OLD_FIRST = "source_seed"

# sebench/report/reference.py -> repository root -> results/reference
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "results" / "reference"


def reference_root(root: str | Path | None = None) -> Path:
    """The folder holding the reference CSVs: `root` when given, else the repository's results/reference."""
    return Path(root) if root is not None else DEFAULT_ROOT


def reference_files(root: str | Path | None = None) -> list[Path]:
    """The reference CSVs under `root`, sorted by name."""
    folder = reference_root(root)
    if not folder.is_dir():
        raise UserError("reference folder not found", where=str(folder),
                        fix="pass root= pointing at results/reference")
    return sorted(folder.glob("*.csv"))


def _resolve(name_or_path: str | Path, root: str | Path | None) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".csv" and p.is_file():
        return p
    folder = reference_root(root)
    stem = p.name[:-4] if p.name.endswith(".csv") else p.name
    candidate = folder / f"{stem}.csv"
    if candidate.is_file():
        return candidate
    available = ", ".join(f.stem for f in reference_files(root))
    raise UserError(f"unknown reference table {str(name_or_path)!r}", where=str(folder),
                    fix=f"available: {available}")


def _parse_value(text: str, path: Path, line: int) -> float:
    text = text.strip()
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise UserError(f"value {text!r} on line {line} is not a number", where=str(path), field="value",
                        fix="write a plain decimal, or leave it empty and explain in the note") from None


def _read_one(path: Path) -> pd.DataFrame:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames and reader.fieldnames[0] == _OLD_FIRST:
            reader.fieldnames = [COLUMNS[0], *reader.fieldnames[1:]]
        if reader.fieldnames != COLUMNS:
            raise UserError(f"columns are {reader.fieldnames}, expected {COLUMNS}", where=str(path))
        records = []
        for line, rec in enumerate(reader, start=2):
            rec = {k: (v if v is not None else "") for k, v in rec.items()}
            rec["value"] = _parse_value(rec["value"], path, line)
            records.append(rec)
    df = pd.DataFrame.from_records(records, columns=COLUMNS)
    df["value"] = df["value"].astype(float)
    return df


def load_reference(name_or_path: str | Path | None = None, *, root: str | Path | None = None) -> pd.DataFrame:
    """One reference table (by stem such as "003_imagenet", file name, or path) or, with no name, all of them
    concatenated with a `file` column holding each file's stem. `value` is float, NaN where the source cell is
    unreadable; every other column is a string ("" when empty)."""
    if name_or_path is not None:
        return _read_one(_resolve(name_or_path, root))
    frames = []
    for path in reference_files(root):
        df = _read_one(path)
        df.insert(0, "file", path.stem)
        frames.append(df)
    if not frames:
        raise UserError("no reference CSVs found", where=str(reference_root(root)))
    return pd.concat(frames, ignore_index=True)


def reference_value(file: str | Path, row: str, column: str, *, root: str | Path | None = None) -> float | None:
    """The number in `file` at (`row`, `column`), exactly as labelled in the CSV.

    None when the cell has no readable value: its value is empty (garbled in the source), or the row and the
    column both exist in the table but the source leaves that cell empty or "-". UserError when the row or the
    column does not exist, listing the ones that do."""
    path = _resolve(file, root)
    df = _read_one(path)
    rows = list(dict.fromkeys(df["row"]))
    if row not in rows:
        raise UserError(f"no row {row!r}", where=str(path), field="row",
                        fix="rows: " + ", ".join(repr(r) for r in rows))
    columns = list(dict.fromkeys(df["column"]))
    if column not in columns:
        raise UserError(f"no column {column!r}", where=str(path), field="column",
                        fix="columns: " + ", ".join(repr(c) for c in columns))
    hit = df[(df["row"] == row) & (df["column"] == column)]
    if hit.empty:
        return None
    if len(hit) > 1:
        raise UserError(f"{len(hit)} cells for row {row!r}, column {column!r}", where=str(path),
                        fix="each (row, column) must appear once")
    value = float(hit["value"].iloc[0])
    return None if math.isnan(value) else value
