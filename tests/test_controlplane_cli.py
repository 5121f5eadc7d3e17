"""`up --control-plane istiod` never builds silently; its options are checked up front."""

from __future__ import annotations

import pytest

from lab.cli import main


def test_missing_istiod_is_one_line_naming_the_install_command(
        lab_home, monkeypatch: pytest.MonkeyPatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("REDIS_MESH_LAB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("REDIS_MESH_LAB_PILOT", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert main(["up", "--name", "cp-missing", "--control-plane", "istiod", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "redis-mesh-lab tools install istiod" in err[0]
    assert not (tmp_path / "empty-cache").exists()  # nothing was built


def test_proxy_port_is_refused_with_istiod(lab_home, capsys) -> None:
    assert main(["up", "--control-plane", "istiod", "--proxy-port", "6000"]) == 2
    assert "--proxy-port does not apply" in capsys.readouterr().err


def test_unknown_control_plane_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["up", "--control-plane", "linkerd"])
    assert exc.value.code == 2
