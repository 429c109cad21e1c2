"""A DAG run drawn left to right with box-drawing edges, nodes coloured by state."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from dtq_core.snapshot import WorkflowSnapshot
from dtq_tui.graph import layout
from dtq_tui.palette import palette_for


class DagView(Widget):
    """Renders :attr:`run` with :attr:`selected` node highlighted."""

    DEFAULT_CSS = """
    DagView {
        height: auto;
        width: auto;
        min-width: 100%;
        padding: 0 1;
    }
    """

    run: reactive[WorkflowSnapshot | None] = reactive(None, layout=True)
    """The DAG run drawn."""

    selected: reactive[str | None] = reactive(None)
    """The id of the highlighted node."""

    def render(self) -> Text:
        """The graph."""
        run = self.run
        if run is None:
            return Text("select a run", style="italic")
        if not run.nodes:
            return Text("this run has no nodes", style="italic")
        pal = palette_for(self.app.theme_variables)
        canvas = layout(run.nodes)
        states = {n.id: n.state for n in run.nodes}
        edge = pal.role("dim")
        text = Text(no_wrap=True)
        for y in range(canvas.height):
            row, owners = canvas.chars[y], canvas.owner[y]
            x = 0
            while x < canvas.width:
                owner = owners[x]
                end = x
                while end < canvas.width and owners[end] == owner:
                    end += 1
                chunk = "".join(row[x:end])
                if owner is None:
                    text.append(chunk, edge)
                else:
                    style = pal.state(states.get(owner)) + Style(bold=True)
                    if owner == self.selected:
                        style += Style(reverse=True)
                    text.append(chunk, style)
                x = end
            text.rstrip()
            if y < canvas.height - 1:
                text.append("\n")
        return text

    def get_content_width(self, container: object, viewport: object) -> int:
        """As wide as the graph."""
        run = self.run
        return layout(run.nodes).width if run is not None and run.nodes else 20

    def get_content_height(self, container: object, viewport: object, width: int) -> int:
        """As tall as the graph."""
        run = self.run
        return max(1, layout(run.nodes).height) if run is not None and run.nodes else 1
