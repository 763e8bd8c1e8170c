"""Excel, JSON and CSV outputs of a report's tables.

The workbook has an "About" sheet (title, parameters, data freshness) and one formatted sheet per
table: a styled, frozen header row with an auto filter, number and date formats, and column widths
fitted to the contents. Mail is hostile: a text cell is always written as text (``data_type "s"``),
so ``=HYPERLINK(...)`` from a subject is shown, never evaluated. CSV cells that a spreadsheet would
take for a formula (text starting with ``= + - @``, tab or carriage return) get a leading ``'``
(OWASP's CSV-injection guard); JSON keeps the text as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

HEADER_FILL = PatternFill("solid", fgColor="1F5F8B")
HEADER_FONT = Font(bold=True, color="FFFFFF")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
SHEET_UNSAFE = re.compile(r"[\[\]:*?/\\]")
MAX_WIDTH = 60
INT_FORMAT, FLOAT_FORMAT, RATIO_FORMAT = "#,##0", "#,##0.00", "0.0%"
DATETIME_FORMAT, DATE_FORMAT = "yyyy-mm-dd hh:mm:ss", "yyyy-mm-dd"


def _sheet_name(name: str, taken: set[str]) -> str:
    base = SHEET_UNSAFE.sub("_", name)[:31] or "table"
    candidate, n = base, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{base[: 31 - len(str(n)) - 1]}_{n}"
    taken.add(candidate.lower())
    return candidate


def _excel_column(series: pd.Series) -> tuple[list[Any], str | None]:
    """A column's values as Excel can hold them, and its number format."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return [None if pd.isna(v) else bool(v) for v in series], None
    if pd.api.types.is_datetime64_any_dtype(dtype):
        naive = series.dt.tz_convert("UTC").dt.tz_localize(None) if getattr(
            series.dt, "tz", None) is not None else series
        values = [None if pd.isna(v) else v.to_pydatetime() for v in naive]
        dated = naive.dropna()
        only_dates = bool(len(dated)) and bool((dated == dated.dt.normalize()).all())
        return values, DATE_FORMAT if only_dates else DATETIME_FORMAT
    if pd.api.types.is_integer_dtype(dtype):
        return [None if pd.isna(v) else int(v) for v in series], INT_FORMAT
    if pd.api.types.is_float_dtype(dtype):
        ratio = str(series.name).endswith(("_ratio", "_share", "_rate"))
        return ([None if not np.isfinite(v) else float(v) for v in series.astype(float)],
                RATIO_FORMAT if ratio else FLOAT_FORMAT)
    return [None if _missing(v) else _plain(v) for v in series], None


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, list | tuple | dict) and bool(pd.isna(value)))


def _plain(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.tz_convert("UTC").tz_localize(None).to_pydatetime() if value.tzinfo else (
            value.to_pydatetime())
    if isinstance(value, int | float | bool):
        return value
    # control characters XML cannot hold (mail has them) would make openpyxl refuse the workbook
    return ILLEGAL_CHARACTERS_RE.sub("", str(value))


def write_sheet(sheet: Worksheet, frame: pd.DataFrame) -> None:
    """``frame`` into ``sheet``: header, values (text as text), formats, filter, widths."""
    sheet.append([str(c) for c in frame.columns])
    for cell in sheet[1]:
        cell.fill, cell.font = HEADER_FILL, HEADER_FONT
        cell.alignment = Alignment(vertical="center")
        cell.data_type = "s"
    columns = [_excel_column(frame[c]) for c in frame.columns]
    for row in zip(*(values for values, _ in columns), strict=True) if len(frame) else ():
        sheet.append(list(row))
    for index, (values, number_format) in enumerate(columns, start=1):
        letter = get_column_letter(index)
        for cell in sheet[letter][1:]:
            if isinstance(cell.value, str):
                cell.data_type = "s"  # text from mail is never a formula
            elif number_format is not None:
                cell.number_format = number_format
        sample = [len(str(frame.columns[index - 1]))] + [
            len(v.strftime("%Y-%m-%d %H:%M:%S")) if hasattr(v, "strftime") else len(str(v))
            for v in values[:500] if v is not None]
        sheet.column_dimensions[letter].width = min(MAX_WIDTH, max(sample) + 2)
    sheet.freeze_panes = "A2"
    if len(frame.columns):
        sheet.auto_filter.ref = f"A1:{get_column_letter(len(frame.columns))}{len(frame) + 1}"


def write_workbook(tables: Mapping[str, pd.DataFrame], path: Path, *,
                   about: Mapping[str, Any] | None = None) -> Path:
    """One sheet per table (after an "About" sheet when ``about`` is given); return ``path``."""
    book = Workbook()
    first: Worksheet = book.active  # type: ignore[assignment]
    taken: set[str] = set()
    if about is not None:
        first.title = _sheet_name("About", taken)
        rows = pd.DataFrame({"item": list(about), "value": [
            json.dumps(v, default=str) if isinstance(v, dict | list) else str(v)
            for v in about.values()]})
        write_sheet(first, rows)
    else:
        book.remove(first)
    for name, frame in tables.items():
        write_sheet(book.create_sheet(_sheet_name(name, taken)), frame)
    if not book.sheetnames:
        book.create_sheet("About")
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)
    return path


def guard_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells that would start a spreadsheet formula begin with ``'``."""
    result = frame.copy()
    for column in result.columns:
        series = result[column]
        if pd.api.types.is_string_dtype(series.dtype) or pd.api.types.is_object_dtype(
            series.dtype) or isinstance(series.dtype, pd.CategoricalDtype):
            text = series.astype("string")
            risky = text.str.startswith(FORMULA_START).fillna(False)
            result[column] = text.where(~risky, "'" + text)
    return result


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` as UTF-8 CSV (formula-guarded, ISO timestamps); return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    guard_csv(frame).to_csv(path, index=False, date_format="%Y-%m-%dT%H:%M:%S%z")
    return path


def write_json(tables: Mapping[str, pd.DataFrame], path: Path, *,
               about: Mapping[str, Any] | None = None) -> Path:
    """Every table as records under ``tables``, with the ``about`` fields; return ``path``."""
    document: dict[str, Any] = dict(about or {})
    document["tables"] = {
        name: json.loads(frame.to_json(orient="records", date_format="iso", default_handler=str))
        for name, frame in tables.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, ensure_ascii=False, indent=1, default=str),
                    encoding="utf-8")
    return path
