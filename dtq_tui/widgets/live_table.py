"""A DataTable updated in place from rows (keeping the cursor's row), and its pane.

Every cell goes through :func:`dtq_tui.plain.plain` (a ``str`` would be parsed as markup
by the DataTable), and columns give way by priority on a narrow terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static
from textual.widgets.data_table import ColumnKey, RowDoesNotExist

from dtq_core.text import escape_controls
from dtq_tui.plain import plain

Row = tuple[str, Sequence[Any]]
#: ``(label, key, width)`` or ``(label, key, width, priority)``.
ColumnSpec = tuple[Any, ...]

#: A column width meaning "whatever room is left".
FLEX = -1
#: The narrowest a flexible column gets (lower-priority columns give way to keep it).
FLEX_MIN = 20
#: A column's priority when its spec gives none; lower-priority columns give way first.
DEFAULT_PRIORITY = 5
#: The priority of a flexible column (the message or error: it keeps its room).
FLEX_PRIORITY = 9


def safe_cell(value: Any) -> Any:
    """A cell that cannot be parsed as markup nor drive the terminal.

    ``str`` becomes literal text; a ``Text`` built from data with a control character
    in it is rebuilt with the character escaped (its spans are dropped, its style kept).
    """
    if isinstance(value, str):
        return plain(value)
    if isinstance(value, Text):
        if not value.plain.isprintable():
            fixed = Text(
                escape_controls(value.plain),
                style=value.style,
                justify=value.justify,
                no_wrap=True,
                overflow="ellipsis",
                end="",
            )
            return fixed
        if value.overflow is None:
            value.overflow = "ellipsis"
            value.no_wrap = True
    return value


class LiveTable(DataTable[Any]):
    """A row-cursor table whose rows are replaced wholesale each refresh.

    Columns are ``(label, key, width[, priority])``; a width of :data:`FLEX` makes the
    column take the room the others leave (at least :data:`FLEX_MIN`), recomputed on
    resize. When the room is short, the columns of lowest priority are hidden first (the
    id and the message keep theirs); :meth:`row_cells` still holds every cell, for the
    full-row view.

    Rows are ``(key, cells)``. When the keys are the same and in the same order only
    changed cells are written; otherwise the table is rebuilt and the cursor returns to
    the row it was on (by key), so a live refresh never moves the operator's selection.
    """

    DEFAULT_CSS = """
    LiveTable {
        height: 1fr;
    }
    """

    def __init__(
        self,
        columns: Sequence[ColumnSpec],
        *,
        flex_min: int = FLEX_MIN,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, name=name, id=id, classes=classes)
        self.flex_min = flex_min
        self._columns_spec: list[tuple[str, str, int | None, int]] = [
            (
                c[0],
                c[1],
                c[2],
                c[3] if len(c) > 3 else (FLEX_PRIORITY if c[2] == FLEX else DEFAULT_PRIORITY),
            )
            for c in columns
        ]
        self._keys: list[str] = []
        self._cells: dict[str, tuple[Any, ...]] = {}
        self._flex = FLEX_MIN
        self._shown: list[int] = list(range(len(self._columns_spec)))

    def on_mount(self) -> None:
        """Create the columns."""
        self._shown, self._flex = self._layout()
        self._add_columns()

    def _add_columns(self) -> None:
        for i in self._shown:
            label, key, width, _ = self._columns_spec[i]
            header = Text(label, no_wrap=True, overflow="ellipsis", end="")
            self.add_column(header, key=key, width=self._flex if width == FLEX else width)

    def _layout(self) -> tuple[list[int], int]:
        """The columns that fit (by priority) and the flexible column's width."""
        total = self.size.width or max(20, self.app.size.width - 4)
        shown = list(range(len(self._columns_spec)))

        def room(cols: list[int]) -> int:
            fixed = sum(
                self._columns_spec[i][2] or 0 for i in cols if self._columns_spec[i][2] != FLEX
            )
            pad = 2 * self.cell_padding * len(cols)
            return total - fixed - pad - 1

        has_flex = any(self._columns_spec[i][2] == FLEX for i in shown)
        need = self.flex_min if has_flex else 0
        while room(shown) < need and len(shown) > 1:
            # The lowest priority gives way first; among equals, the rightmost.
            drop = min(reversed(shown), key=lambda i: self._columns_spec[i][3])
            if self._columns_spec[drop][2] == FLEX and len(shown) > 1:
                others = [i for i in shown if i != drop]
                drop = min(reversed(others), key=lambda i: self._columns_spec[i][3])
            shown.remove(drop)
        return shown, max(self.flex_min, room(shown))

    def fit_column(self, key: str, width: int) -> None:
        """Make a column exactly ``width`` cells wide (for values never cut, e.g. cron)."""
        for i, (label, ckey, old, prio) in enumerate(self._columns_spec):
            if ckey == key and old != width:
                self._columns_spec[i] = (label, ckey, width, prio)
                self._refit(force=True)
                return

    def on_resize(self) -> None:
        """Re-fit the columns to the new width (rebuilding them if that changed them)."""
        self._refit()

    def _refit(self, force: bool = False) -> None:
        if not self.is_mounted:
            return
        shown, flex = self._layout()
        if shown == self._shown and flex == self._flex and not force:
            return
        self._shown, self._flex = shown, flex
        keys, cells, row = self._keys, self._cells, self.cursor_row
        self.clear(columns=True)
        self._add_columns()
        for key in keys:
            self.add_row(*self._visible(cells[key]), key=key)
        if keys:
            self.move_cursor(row=min(row, len(keys) - 1), animate=False)

    def set_labels(self, labels: dict[str, str]) -> None:
        """Relabel columns by key (a sort column's arrow)."""
        self._columns_spec = [(labels.get(k, lb), k, w, pr) for lb, k, w, pr in self._columns_spec]
        for key, label in labels.items():
            column = self.columns.get(ColumnKey(key))
            if column is not None:
                column.label = Text(label, no_wrap=True, overflow="ellipsis", end="")
        # The header's render cache is keyed on the update count (DataTable.sort does so).
        self._update_count += 1
        self.refresh()

    def _visible(self, cells: Sequence[Any]) -> list[Any]:
        return [cells[i] for i in self._shown if i < len(cells)]

    @property
    def hidden_columns(self) -> list[str]:
        """Labels of the columns that gave way to narrow room."""
        shown = set(self._shown)
        return [c[0] for i, c in enumerate(self._columns_spec) if i not in shown]

    def row_cells(self, key: str | None = None) -> list[tuple[str, Any]]:
        """``(label, cell)`` of every column (hidden ones too) of a row (default: current)."""
        key = self.current_key if key is None else key
        cells = self._cells.get(key or "")
        if cells is None:
            return []
        return [
            (c[0] or c[1], cells[i]) for i, c in enumerate(self._columns_spec) if i < len(cells)
        ]

    @property
    def current_key(self) -> str | None:
        """The key of the row under the cursor (``None`` when empty)."""
        if not self._keys:
            return None
        row = self.cursor_row
        if 0 <= row < len(self._keys):
            return self._keys[row]
        return None

    @property
    def keys(self) -> list[str]:
        """Row keys in display order."""
        return list(self._keys)

    def sync(self, rows: Sequence[Row]) -> None:
        """Show ``rows``, touching only what changed."""
        keys = [k for k, _ in rows]
        shown = set(self._shown)
        if keys == self._keys:
            col_keys = [c[1] for c in self._columns_spec]
            for key, cells in rows:
                old = self._cells.get(key)
                cells_t = tuple(safe_cell(c) for c in cells)
                if old == cells_t:
                    continue
                for i, value in enumerate(cells_t):
                    if i in shown and (old is None or i >= len(old) or old[i] != value):
                        self.update_cell(key, col_keys[i], value)
                self._cells[key] = cells_t
            return
        current = self.current_key
        row_before = self.cursor_row
        self.clear()
        self._cells = {}
        for key, cells in rows:
            cells_t = tuple(safe_cell(c) for c in cells)
            self.add_row(*self._visible(cells_t), key=key)
            self._cells[key] = cells_t
        self._keys = keys
        if current in keys:
            self.move_cursor(row=keys.index(current), animate=False, scroll=False)
        elif keys:
            self.move_cursor(row=min(max(0, row_before), len(keys) - 1), animate=False)

    def column_width(self, key: str) -> int:
        """The width of a column (a flexible one's current width)."""
        for _, ckey, width, _ in self._columns_spec:
            if ckey == key:
                return self._flex if width == FLEX else (width or FLEX_MIN)
        raise KeyError(key)

    def row_index(self, key: str) -> int | None:
        """The display index of a key, if shown."""
        try:
            return self.get_row_index(key)
        except RowDoesNotExist:
            return None


class TablePane(Vertical):
    """A :class:`LiveTable` with an honest empty state under its header."""

    DEFAULT_CSS = """
    TablePane {
        height: 1fr;
        & > .empty-note {
            display: none;
            color: $text-muted;
            text-style: italic;
            padding: 0 1;
        }
        &.-empty > LiveTable {
            height: 2;
        }
        &.-empty > .empty-note {
            display: block;
        }
    }
    """

    def __init__(
        self,
        columns: Sequence[ColumnSpec],
        *,
        empty_text: str = "nothing to show",
        flex_min: int = FLEX_MIN,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._columns = columns
        self.empty_text = empty_text
        self.flex_min = flex_min

    def compose(self) -> ComposeResult:
        """The table and the note shown when it has no rows."""
        yield LiveTable(self._columns, flex_min=self.flex_min)
        yield Static(self.empty_text, classes="empty-note", markup=False)

    def on_mount(self) -> None:
        """Start empty."""
        self.add_class("-empty")

    @property
    def table(self) -> LiveTable:
        """The table."""
        return self.query_one(LiveTable)

    def sync(self, rows: Sequence[Row], empty_text: str | None = None) -> None:
        """Show ``rows``; with none, show ``empty_text`` (or the default)."""
        self.table.sync(rows)
        if empty_text is not None and empty_text != self.empty_text:
            self.empty_text = empty_text
            self.query_one(".empty-note", Static).update(empty_text)
        self.set_class(not rows, "-empty")
