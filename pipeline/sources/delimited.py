"""Delimited framing: CSV and TSV dumps with a header row, one unit per row.

Lines come from :func:`pipeline.sources.framing.decoded_lines` (so the line bound and the UTF-8
check are framing's), and :mod:`csv` joins a quoted field's lines into one row. A row whose
column count differs from the header's, or that the csv module cannot parse, is one
``UnitError`` and reading goes on; a header row that cannot be read ends the file, since every
row after it would be misread.
"""

from __future__ import annotations

import csv
from typing import BinaryIO

from pipeline.records import Reason
from pipeline.sources.framing import Frame, RawUnit, UnitError, decoded_lines, line_error


def frame_delimited(stream: BinaryIO, delimiter: str) -> Frame:
    """CSV/TSV with a header row; a row whose column count differs from the header is an error.

    A row the csv module cannot parse (an over-long field, a stray quote) is dead-lettered and
    reading goes on with the next row.
    """
    errors: list[UnitError] = []
    row_lines: list[tuple[int, int]] = []  # (line, offset) of the physical lines of the current row

    def lines():
        for number, offset, text, raw in decoded_lines(stream):
            if text is None:
                errors.append(line_error(number, offset, raw))
                continue
            row_lines.append((number, offset))
            yield text

    reader = csv.reader(lines(), delimiter=delimiter)
    header = None
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            line, offset = row_lines[0] if row_lines else (None, None)
            row_lines.clear()
            if header is None:  # the header row itself: no row after it could be read correctly
                yield from _header_unreadable(errors, line, offset, f"CSV error: {exc}")
                return
            yield from errors
            errors.clear()
            yield UnitError(line, offset, Reason.MALFORMED_ROW, f"CSV error: {exc}")
            continue
        if header is None and errors:  # an undecodable line where the header should be
            yield from _header_unreadable(errors, errors[0].line, errors[0].offset, "the header row is not valid UTF-8")
            return
        yield from errors
        errors.clear()
        line, offset = row_lines[0]
        row_lines.clear()
        if header is None:
            header = [h.strip() for h in row]
            if not any(header):
                header = None
            continue
        raw = delimiter.join(row)
        if not row or not any(cell.strip() for cell in row):
            yield RawUnit(line, offset, None)
            continue
        if len(row) != len(header):
            yield UnitError(line, offset, Reason.MALFORMED_ROW,
                            f"row has {len(row)} columns, header has {len(header)}", raw)
            continue
        yield RawUnit(line, offset, dict(zip(header, row)), raw)
    yield from errors


def _header_unreadable(errors: list[UnitError], line, offset, why: str) -> Frame:
    """A delimited file whose header row cannot be read ends with one fatal error: taking the
    next row as the header would swallow it and misread every row after it."""
    first = errors[0] if errors else None
    yield UnitError(line, offset, first.reason if first else Reason.MALFORMED_ROW,
                    f"{why}: the columns are unknown, so the file is not read", first.raw if first else "",
                    fatal=True)
