"""The pieces a report is made of: sections holding notes, tables and images."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Table:
    headers: list[str]
    rows: list[list]
    title: str = ""


@dataclass
class Section:
    title: str
    tables: list[Table] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # file names in the report folder
    notes: list[str] = field(default_factory=list)
