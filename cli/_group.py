"""The root command group: lazily loaded command modules, one error handler around all.

``dtq --help`` must not build every command: typer turns each function signature into
click parameters (evaluating every annotation), which for the whole tree costs more than
the rest of start-up. The root therefore names each command's module and loads it when
the command is used; the help listing uses the short help given with the name (a test
keeps it equal to the command's own).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from cli._errors import report

#: ``name -> ("module:attribute", short help)``; the attribute is a ``typer.Typer``.
CommandTable = Mapping[str, tuple[str, str]]


def load_command(name: str, target: str) -> Any:
    """Import ``module:attribute`` and turn its Typer app into a click command named ``name``."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    command = typer.main.get_command(getattr(module, attr or "app"))
    command.name = name
    return command


class LazyCommands(MutableMapping[str, Any]):
    """The root's subcommands: built from their module on first use."""

    def __init__(self, table: CommandTable) -> None:
        self._table = dict(table)
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            if name not in self._table:
                raise KeyError(name)
            self._loaded[name] = load_command(name, self._table[name][0])
        return self._loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._loaded[name] = command
        self._table.setdefault(name, ("", command.get_short_help_str()))

    def __delitem__(self, name: str) -> None:
        self._table.pop(name)
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def short_help(self, name: str) -> str:
        """The short help given in the table (without loading the command)."""
        return self._table[name][1]


class DtqGroup(TyperGroup):
    """The ``dtq`` group: lazy subcommands and the one error handler.

    Subclasses set :attr:`table` (see :func:`root_group`).
    """

    table: CommandTable = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = LazyCommands(self.table)

    def list_commands(self, ctx: Any) -> list[str]:
        """Command names in table order (nothing is loaded)."""
        return list(self.commands)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """List the commands with their table help, loading none of them."""
        commands = self.commands
        assert isinstance(commands, LazyCommands)
        rows = [(name, commands.short_help(name)) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: Any) -> Any:
        """Run the command; map any non-CLI exception to one line and an exit code."""
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            raise typer.Exit(report(exc)) from None


def root_group(table: CommandTable) -> type[DtqGroup]:
    """A :class:`DtqGroup` class serving the commands of ``table``."""
    return type("DtqRootGroup", (DtqGroup,), {"table": dict(table)})
