"""A DataTable updated in place from rows (keeping the cursor's row), and its pane."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static
from textual.widgets.data_table import ColumnKey, RowDoesNotExist

Row = tuple[str, Sequence[Any]]

#: A column width meaning "whatever room is left".
FLEX = -1
#: The narrowest a flexible column gets.
FLEX_MIN = 12


class LiveTable(DataTable[Any]):
    """A row-cursor table whose rows are replaced wholesale each refresh.

    Columns are ``(label, key, width)``; a width of :data:`FLEX` makes the column take
    the room the others leave (at least :data:`FLEX_MIN`), recomputed on resize.

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
        columns: Sequence[tuple[str, str, int | None]],
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, name=name, id=id, classes=classes)
        self._columns_spec = list(columns)
        self._keys: list[str] = []
        self._cells: dict[str, tuple[Any, ...]] = {}
        self._flex = FLEX_MIN

    def on_mount(self) -> None:
        """Create the columns."""
        self._flex = self._flex_width()
        self._add_columns()

    def _add_columns(self) -> None:
        for label, key, width in self._columns_spec:
            self.add_column(label, key=key, width=self._flex if width == FLEX else width)

    def _flex_width(self) -> int:
        fixed = sum(w or 0 for _, _, w in self._columns_spec if w != FLEX)
        pad = 2 * self.cell_padding * len(self._columns_spec)
        room = (self.size.width or self.app.size.width - 4) - fixed - pad - 1
        return max(FLEX_MIN, room)

    def on_resize(self) -> None:
        """Give a flexible column the new room (rebuilding the columns if it changed)."""
        if not any(w == FLEX for _, _, w in self._columns_spec):
            return
        flex = self._flex_width()
        if flex == self._flex:
            return
        self._flex = flex
        keys, cells, row = self._keys, self._cells, self.cursor_row
        self.clear(columns=True)
        self._add_columns()
        for key in keys:
            self.add_row(*cells[key], key=key)
        if keys:
            self.move_cursor(row=min(row, len(keys) - 1), animate=False)

    def set_labels(self, labels: dict[str, str]) -> None:
        """Relabel columns by key (a sort column's arrow)."""
        self._columns_spec = [(labels.get(k, lb), k, w) for lb, k, w in self._columns_spec]
        for key, label in labels.items():
            column = self.columns.get(ColumnKey(key))
            if column is not None:
                column.label = Text(label)
        # The header's render cache is keyed on the update count (DataTable.sort does so).
        self._update_count += 1
        self.refresh()

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
        if keys == self._keys:
            col_keys = [c[1] for c in self._columns_spec]
            for key, cells in rows:
                old = self._cells.get(key)
                cells_t = tuple(cells)
                if old == cells_t:
                    continue
                for i, value in enumerate(cells_t):
                    if old is None or i >= len(old) or old[i] != value:
                        self.update_cell(key, col_keys[i], value)
                self._cells[key] = cells_t
            return
        current = self.current_key
        row_before = self.cursor_row
        self.clear()
        self._cells = {}
        for key, cells in rows:
            self.add_row(*cells, key=key)
            self._cells[key] = tuple(cells)
        self._keys = keys
        if current in keys:
            self.move_cursor(row=keys.index(current), animate=False, scroll=False)
        elif keys:
            self.move_cursor(row=min(max(0, row_before), len(keys) - 1), animate=False)

    def column_width(self, key: str) -> int:
        """The width of a column (a flexible one's current width)."""
        for _, ckey, width in self._columns_spec:
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
        columns: Sequence[tuple[str, str, int | None]],
        *,
        empty_text: str = "nothing to show",
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._columns = columns
        self.empty_text = empty_text

    def compose(self) -> ComposeResult:
        """The table and the note shown when it has no rows."""
        yield LiveTable(self._columns)
        yield Static(self.empty_text, classes="empty-note")

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
