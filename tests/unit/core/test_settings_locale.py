"""`secret.key` is UTF-8 whatever the process's locale: nodes sharing a data dir under different
locales (a `zh_CN.GBK` shell, a `C` service manager) read the same key."""

import locale
from collections.abc import Iterator
from pathlib import Path

import pytest

from apiforge.core.settings import InvalidSettingsError, Settings


@pytest.fixture
def ascii_locale(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A process whose locale's encoding is ASCII (LC_CTYPE=C outside Python's UTF-8 mode): what
    `open()` without an encoding decodes with."""
    monkeypatch.chdir(tmp_path)  # no `.env` of the working directory
    previous = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, previous)


@pytest.mark.usefixtures("ascii_locale")
def test_a_non_ascii_secret_key_file_is_read_as_utf8_under_any_locale(tmp_path: Path) -> None:
    key = "服务器密钥-clé-" + "x" * 32
    (tmp_path / "secret.key").write_bytes(key.encode() + b"\n")
    assert Settings(data_dir=tmp_path, secret_key=None).signing_key == key


@pytest.mark.usefixtures("ascii_locale")
def test_a_secret_key_file_that_is_not_utf8_is_a_settings_error(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_bytes("服务器密钥".encode("gbk"))
    with pytest.raises(InvalidSettingsError, match="is not UTF-8 text"):
        _ = Settings(data_dir=tmp_path, secret_key=None).signing_key
