from __future__ import annotations

from lab.monitor import _LINE, parse_args


def test_parse_plain_and_escaped_arguments():
    assert parse_args('"set" "b" "bb"') == ["set", "b", "bb"]
    assert parse_args(r'"set" "k" "a\"b\\c\n\x01 d"') == ["set", "k", 'a"b\\c\n\x01 d']
    assert parse_args('"get" ""') == ["get", ""]


def test_monitor_line_shape():
    line = '+1795370163.656316 [0 127.0.0.1:39544] "set" "b" "b"'
    match = _LINE.match(line)
    assert match is not None
    assert match["client"] == "127.0.0.1:39544"
    assert parse_args(match["args"]) == ["set", "b", "b"]
