"""--shards and --languages: what they select, and the selections that would select nothing."""

from __future__ import annotations

import pytest

from xqg.config import ConfigError
from xqg.selectors import parse_languages, parse_shards


def test_selectors() -> None:
    assert parse_shards("0-3,7") == {0, 1, 2, 3, 7}
    assert parse_shards(" 4 - 5 ,, 9") == {4, 5, 9}
    assert parse_languages(" SW,id") == ["sw", "id"]
    with pytest.raises(ConfigError, match="--shards"):
        parse_shards("a-b")
    with pytest.raises(ConfigError, match="unknown language code"):
        parse_languages("sw,klingon")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("9-3", "--shards: the range '9-3' is reversed (write 3-9)"),
        ("", "--shards names no shard: ''"),
        (" , ", "--shards names no shard: ' , '"),
        ("-3", "--shards expects shard numbers and ranges like 0-9,12, got '-3'"),
        ("\u00b2", "--shards expects shard numbers and ranges like 0-9,12, got '\u00b2'"),  # a digit int() refuses
    ],
)
def test_shard_selections_that_select_nothing_are_errors(value: str, message: str) -> None:
    # range(9, 4) is empty: a reversed range used to run nothing and exit 0
    with pytest.raises(ConfigError) as err:
        parse_shards(value)
    assert str(err.value) == message


def test_a_language_selection_that_selects_nothing_is_an_error() -> None:
    with pytest.raises(ConfigError, match="--languages names no language: ' , '"):
        parse_languages(" , ")
