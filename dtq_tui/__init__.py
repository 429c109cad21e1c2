"""dtq-tui: the live operations console for DTQ (``dtq-tui --demo`` to try it)."""
