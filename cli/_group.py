"""The root command group: lazily loaded command modules, one error handler around all.

``dtq --help`` must not build every command: typer turns each function signature into
click parameters (evaluating every annotation), which for the whole tree costs more than
the rest of start-up. The root therefore names each command's module and loads it when
the command is used; the help listing uses the short help given with the name (a test
keeps it equal to the command's own).

The global options are defined once, on the root callback (:func:`cli._common.root`).
A loaded command and each of its subcommands get a copy of them that applies what the
user wrote after the command name, so ``dtq stats --backend URL`` and ``dtq --backend
URL stats`` mean the same.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from cli._common import GLOBAL_OPTIONS, set_global
from cli._errors import report
from cli._help import tidy

#: ``name -> ("module:attribute", short help)``; the attribute is a ``typer.Typer``.
CommandTable = Mapping[str, tuple[str, str]]


def load_command(name: str, target: str, global_options: Sequence[Any] = ()) -> Any:
    """Import ``module:attribute`` and turn its Typer app into a click command named ``name``.

    Args:
        name: The command's name under ``dtq``.
        target: ``module:attribute`` of a ``typer.Typer``.
        global_options: The root's global options, copied onto the command and every
            subcommand (see :func:`add_global_options`).
    """
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    command = typer.main.get_command(getattr(module, attr or "app"))
    command.name = name
    tidy(command)
    if global_options:
        add_global_options(command, global_options)
    return command


def _apply_after_command(ctx: Any, param: Any, value: Any) -> Any:
    # Only what was typed: a default must not undo the root's value. (typer 0.29 vendors
    # click, so its ParameterSource is compared by name.)
    source = ctx.get_parameter_source(param.name)
    if source is not None and source.name == "COMMANDLINE":
        set_global(param.name, value)
    return value


def add_global_options(command: Any, options: Sequence[Any]) -> None:
    """Give ``command`` (and its subcommands) a copy of each global option.

    A copy carries the root's flags, type and help, reads no environment variable (the
    root already did) and hands what was typed to :func:`cli._common.set_global`. An
    option string the command already uses (its own ``--json``) is left to the command.
    """
    taken = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for option in options:
        if taken & {*option.opts, *option.secondary_opts}:
            continue
        dup = copy.copy(option)
        dup.expose_value = False
        dup.callback = _apply_after_command
        dup.envvar = None
        dup.is_eager = False
        command.params.append(dup)
    for sub in getattr(command, "commands", {}).values():
        add_global_options(sub, options)


class LazyCommands(MutableMapping[str, Any]):
    """The root's subcommands: built from their module on first use."""

    def __init__(self, table: CommandTable, global_options: Sequence[Any] = ()) -> None:
        self._table = dict(table)
        self._loaded: dict[str, Any] = {}
        self._globals = tuple(global_options)

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            if name not in self._table:
                raise KeyError(name)
            self._loaded[name] = load_command(name, self._table[name][0], self._globals)
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
        globals_ = [p for p in self.params if p.name in GLOBAL_OPTIONS]
        self.commands = LazyCommands(self.table, globals_)

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
