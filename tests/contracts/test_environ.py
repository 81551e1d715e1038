"""FileAwareEnviron: PORTSIDE_<NAME>_FILE read lazily, conflicts and bad files named."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.environ import FileAwareEnviron, SettingFileError


def test_value_comes_from_the_named_file(tmp_path: Path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    environ = FileAwareEnviron({"PORTSIDE_TOKEN_FILE": str(secret), "HOME": "/h"})
    assert environ["PORTSIDE_TOKEN"] == "s3cret\n"
    assert "PORTSIDE_TOKEN" in environ
    assert environ.get("PORTSIDE_URL") is None
    assert environ["HOME"] == "/h"


def test_a_file_for_an_unused_setting_is_never_read(tmp_path: Path):
    environ = FileAwareEnviron(
        {"PORTSIDE_DATABASE_URL_FILE": str(tmp_path / "absent"), "PORTSIDE_TOKEN": "t"}
    )
    assert environ["PORTSIDE_TOKEN"] == "t"


def test_file_variables_are_not_resolved_twice(tmp_path: Path):
    environ = FileAwareEnviron({"PORTSIDE_TOKEN_FILE": "/somewhere"})
    assert environ["PORTSIDE_TOKEN_FILE"] == "/somewhere"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PORTSIDE_TOKEN_FILE": "{dir}/absent"}, "PORTSIDE_TOKEN_FILE cannot be read"),
        ({"PORTSIDE_TOKEN_FILE": "{dir}/binary"}, "PORTSIDE_TOKEN_FILE is not a UTF-8 text file"),
        (
            {"PORTSIDE_TOKEN": "t", "PORTSIDE_TOKEN_FILE": "{dir}/binary"},
            "set only one of PORTSIDE_TOKEN and PORTSIDE_TOKEN_FILE",
        ),
    ],
)
def test_errors_name_the_variable(tmp_path: Path, environ: dict[str, str], message: str):
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00")
    files = FileAwareEnviron({key: value.format(dir=tmp_path) for key, value in environ.items()})
    with pytest.raises(SettingFileError, match=message):
        files.get("PORTSIDE_TOKEN")
