"""``options.grouped``: a command's dataclass option groups become typer options, and two options of the same
name (in two groups, or a group and the command's own parameter) are refused when the command is declared,
not left for typer to resolve one way or the other."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import pytest

from streaming.cli.options import grouped

pytestmark = pytest.mark.unit


@dataclass
class First:
    limit: int = 1
    quiet: bool = False


@dataclass
class Second:
    limit: int = 2


def test_a_group_s_fields_become_the_command_s_options_and_the_group_is_built_back() -> None:
    def command(name: str, first: First) -> tuple[str, First]:
        return name, first

    wrapped = grouped(command)
    assert list(inspect.signature(wrapped).parameters) == ["name", "limit", "quiet"]
    assert wrapped(name="x", limit=5, quiet=True) == ("x", First(limit=5, quiet=True))


def test_a_field_name_in_two_groups_is_refused() -> None:
    def command(first: First, second: Second) -> None: ...

    with pytest.raises(ValueError, match="duplicate parameter name: 'limit'"):
        grouped(command)


def test_a_field_named_like_the_command_s_own_parameter_is_refused() -> None:
    def command(limit: int, first: First) -> None: ...

    with pytest.raises(ValueError, match="duplicate parameter name: 'limit'"):
        grouped(command)
