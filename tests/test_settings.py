"""Settings: defaults from the contract, environment parsing, one clear line for bad values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spinenode.core.errors import ConfigError
from spinenode.core.settings import Destination, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("SPINENODE_"):
            monkeypatch.delenv(key)


def test_defaults_match_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert (s.ae_title, s.dicom_host, s.dicom_port) == ("SPINENODE", "0.0.0.0", 11112)
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8080)
    assert s.data_dir == (tmp_path / "spinenode-data").resolve()
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'spinenode-data' / 'spinenode.db'}"
    assert s.embedded_broker and s.stable_seconds == 60 and s.allowed_calling_aes == []
    assert s.device == "auto"


def test_environment_lists_and_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('AE_TITLE = "FROMFILE"\nDICOM_PORT = 2000\nSTABLE_SECONDS = 5\n')
    monkeypatch.setenv("SPINENODE_DICOM_PORT", "3000")
    monkeypatch.setenv("SPINENODE_ALLOWED_CALLING_AES", "PACS1, PACS2")
    monkeypatch.setenv("SPINENODE_DESTINATIONS", "PACS@10.0.0.5:104,ARCH@[::1]:11112")
    s = load_settings(cfg)
    assert s.ae_title == "FROMFILE" and s.stable_seconds == 5
    assert s.dicom_port == 3000  # environment beats file
    assert s.allowed_calling_aes == ["PACS1", "PACS2"]
    assert s.destination_list == [Destination("PACS", "10.0.0.5", 104), Destination("ARCH", "::1", 11112)]


def test_destination_transfer_syntax_option() -> None:
    """``;ts=NAME+NAME`` lists the transfer syntaxes export proposes to that destination, in order."""
    s = load_settings(destinations=["PACS@10.0.0.5:104;ts=deflate+explicit", "ARCH@h:11112;tls;ts=implicit"])
    pacs, arch = s.destination_list
    assert pacs.transfer_syntaxes == ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.1") and not pacs.tls
    assert arch.tls and arch.transfer_syntaxes == ("1.2.840.10008.1.2",)
    assert [str(d) for d in s.destination_list] == s.destinations  # round trip
    for bad in ("PACS@h:104;ts=jpeg2000", "PACS@h:104;ts=", "PACS@h:104;ts=explicit+explicit", "PACS@h:104;tls=1"):
        with pytest.raises(ValueError):
            Destination.parse(bad)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("DICOM_PORT", "70000", "SPINENODE_DICOM_PORT"),
        ("AE_TITLE", "WAY_TOO_LONG_AE_TITLE", "SPINENODE_AE_TITLE"),
        ("DESTINATIONS", "PACS-no-port", "SPINENODE_DESTINATIONS"),
        ("DESTINATIONS", "PACS@h:104;ts=jpeg", "SPINENODE_DESTINATIONS"),
        ("STABLE_SECONDS", "-1", "SPINENODE_STABLE_SECONDS"),
        ("DEVICE", "tpu", "SPINENODE_DEVICE"),
        ("DATABASE_URL", "not a url", "SPINENODE_DATABASE_URL"),
    ],
)
def test_bad_value_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str) -> None:
    monkeypatch.setenv(f"SPINENODE_{name}", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    text = str(err.value)
    assert fragment in text and "\n" not in text


def test_unknown_setting_in_file_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text("DICOM_PROT = 1\n")
    with pytest.raises(ConfigError, match="DICOM_PROT in "):  # as the file spells it
        load_settings(cfg)


def test_settings_both_at_top_level_and_in_the_section_are_refused(tmp_path: Path) -> None:
    """With a [spinenode] table, top-level keys would be ignored: refused instead."""
    cfg = tmp_path / "node.toml"
    cfg.write_text('DICOM_PORT = 2000\n[spinenode]\nAE_TITLE = "FROMFILE"\n')
    with pytest.raises(ConfigError, match="both at top level .DICOM_PORT. and under .spinenode."):
        load_settings(cfg)
    cfg.write_text('[spinenode]\nAE_TITLE = "FROMFILE"\n')
    assert load_settings(cfg).ae_title == "FROMFILE"


def test_misspelt_environment_variable_is_named_in_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SPINENODE_STABLE_SECOND", "5")
    monkeypatch.setenv("SPINENODE_YOLO_DIR", "/tmp/yolo")  # read by models.offline, not a setting
    with caplog.at_level("WARNING", logger="spinenode.core.settings"):
        s = load_settings()
    assert s.stable_seconds == 60  # the misspelt value does not apply ...
    warnings = [r.getMessage() for r in caplog.records]
    # ... and the log says so, with the likely meaning; YOLO_DIR is not reported
    assert warnings == ["SPINENODE_STABLE_SECOND is not a setting and is ignored; did you mean "
                        "SPINENODE_STABLE_SECONDS?"]


def test_device_and_log_level_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINENODE_DEVICE", "CUDA")
    monkeypatch.setenv("SPINENODE_LOG_LEVEL", "critical")
    s = load_settings()
    assert (s.device, s.log_level) == ("cuda", "CRITICAL")


def test_serve_refuses_bad_setting_with_one_line(tmp_path: Path) -> None:
    env = {"SPINENODE_DICOM_PORT": "notaport", "SPINENODE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "spinenode_app.cli", "serve"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "SPINENODE_DICOM_PORT" in lines[0], r.stderr


def test_serve_refuses_public_http_without_token(tmp_path: Path) -> None:
    env = {"SPINENODE_HTTP_HOST": "0.0.0.0", "SPINENODE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "spinenode_app.cli", "serve"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert "SPINENODE_ADMIN_TOKEN" in r.stderr
