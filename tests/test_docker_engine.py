"""Without an engine: one line saying how to start one, exit 2."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import cli


def test_no_engine_is_one_line_and_exit_2(tmp_path: Path):
    result = cli("up", "--backend", "docker", "--name", "docker-none",
                 env={"DOCKER_HOST": f"unix://{tmp_path}/no-such.sock",
                      "REDIS_MESH_LAB_HOME": str(tmp_path / "home")})
    assert result.returncode == 2
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("redis-mesh-lab: error")]
    assert len(errors) == 1 and "dockerd" in errors[0] and "Traceback" not in result.stderr
