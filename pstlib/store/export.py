"""Export a store table to CSV, JSON (records) or Parquet, and read such a file back typed.

Times are ISO-8601 UTC (``2025-06-11T18:06:43.123456Z``) in CSV and JSON; Parquet keeps the
loaders' dtypes (tz-aware timestamps, strings, categoricals). CSV cannot tell an empty text from a
missing one: both read back as missing (as '' in a column that cannot be NULL). Cells are written
as they are in the store: mail text is not escaped here (reports and the Excel workbook do that).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from pstlib.errors import StoreError
from pstlib.store import schema
from pstlib.store.load import LOADERS, TEXT_DTYPE, TIME_DTYPE, VOCABULARY, column_dtype, load_table

if TYPE_CHECKING:
    from pstlib.store.db import Store

ExportFormat = Literal["csv", "json", "parquet"]
FORMATS: tuple[str, ...] = ("csv", "json", "parquet")
_ISO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def export_table(
    store: Store,
    table: str,
    fmt: ExportFormat,
    out: Path | None = None,
    session_id: str | None = None,
) -> Path:
    """Write ``table`` (only ``session_id``'s rows where given) to ``out`` and return the path.

    ``out`` may be a file, a directory (an existing one, or a path without a suffix: the file is
    named ``<table>[_<session>].<fmt>`` in it) or ``None`` (that name in the current directory).
    """
    if table not in LOADERS:
        raise StoreError(f"unknown table {table!r} (valid: {', '.join(sorted(LOADERS))})")
    if fmt not in FORMATS:
        raise StoreError(f"unknown export format {fmt!r} (valid: {', '.join(FORMATS)})")
    name = f"{table}_{session_id}.{fmt}" if session_id else f"{table}.{fmt}"
    if out is None:
        path = Path.cwd() / name
    elif out.is_dir() or not out.suffix:
        path = out / name
    else:
        path = out
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = load_table(store, table, session_id)
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    elif fmt == "csv":
        frame.to_csv(path, index=False, date_format=_ISO_FORMAT, encoding="utf-8")
    else:
        _write_json(frame, path)
    return path


def _write_json(frame: pd.DataFrame, path: Path) -> None:
    """Records, one object per row, times ISO-8601 UTC, missing values ``null``."""
    data: dict[str, list[Any]] = {}
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            text = column.dt.strftime(_ISO_FORMAT)
            data[name] = text.astype(object).where(column.notna(), None).tolist()
        else:
            data[name] = column.astype(object).where(column.notna(), None).tolist()
    records = [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(records, handle, ensure_ascii=False, indent=None)
        handle.write("\n")


def read_export(path: Path, table: str) -> pd.DataFrame:
    """Read a file written by :func:`export_table` back with the loaders' dtypes."""
    if table not in LOADERS:
        raise StoreError(f"unknown table {table!r} (valid: {', '.join(sorted(LOADERS))})")
    suffix = path.suffix.lstrip(".")
    if suffix == "parquet":
        frame = pd.read_parquet(path)
        columns = schema.TABLES[table].columns
        for name in frame.columns:  # a categorical with no categories comes back as object
            if column_dtype(table, columns[name]) == "category" and not isinstance(
                frame[name].dtype, pd.CategoricalDtype
            ):
                frame[name] = _coerce(table, columns[name], frame[name])
        return frame
    if suffix == "csv":
        raw = pd.read_csv(path, dtype=object, keep_default_na=False, na_values=[""])
    elif suffix == "json":
        with open(path, encoding="utf-8") as handle:
            records = json.load(handle)
        names = list(schema.TABLES[table].columns.keys())
        raw = (
            pd.DataFrame.from_records(records, columns=names)
            if records
            else pd.DataFrame({c: pd.Series(dtype=object) for c in names})
        )
    else:
        raise StoreError(f"cannot read {path}: not a .csv, .json or .parquet file")
    columns = schema.TABLES[table].columns
    return pd.DataFrame(
        {name: _coerce(table, columns[name], raw[name]) for name in raw.columns},
        columns=list(raw.columns),
    )


def _coerce(table: str, column: Any, values: pd.Series) -> Any:
    dtype = column_dtype(table, column)
    values = values.astype(object).where(values.notna(), None)
    if dtype == "category":
        vocabulary = VOCABULARY[(table, column.name)] or ()
        extra = sorted({str(v) for v in values.dropna()} - set(vocabulary))
        return pd.Categorical(values, categories=[*vocabulary, *extra])
    if dtype == TIME_DTYPE:
        return pd.to_datetime(values, utc=True, format="ISO8601").dt.as_unit("us").array
    if dtype == "boolean":
        truth = {"true": True, "1": True, "false": False, "0": False}
        return pd.array(
            [v if v is None or isinstance(v, bool) else truth[str(v).lower()] for v in values],
            dtype="boolean",
        )
    if dtype == "int64":
        return np.asarray(values.astype(np.int64))
    if dtype == "Int64":
        return pd.array([None if v is None else int(v) for v in values], dtype="Int64")
    if dtype == "float64":
        return np.asarray(values.astype(np.float64))
    if not column.nullable:  # CSV wrote '' and NULL alike; this column cannot hold NULL
        values = values.where(values.notna(), "")
    return pd.array(values.to_numpy(dtype=object), dtype=TEXT_DTYPE)
