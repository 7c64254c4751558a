"""Schemathesis against the API's own OpenAPI schema (/api/schema/): generated
requests, valid and invalid, to every operation, with an administrator's
token; no response may be a 5xx."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .test_admin_support import base_url, issue_token, start_console_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_console_server(tmp_path_factory.mktemp("schemathesis-server"))
    yield server
    stop_server(server)


@pytest.mark.timeout(600)
def test_no_server_error_anywhere_in_the_schema(server, tmp_path):
    """Every operation answers generated input with 2xx or 4xx, never 5xx."""
    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    token = issue_token(server)
    result = subprocess.run(
        [
            executable,
            "run",
            f"{base_url(server)}/api/schema/",
            "--header",
            f"Authorization: Token {token}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "30",
            "--workers",
            "1",
            "--seed",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "20",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{output[-6000:]}\nserver log:\n{server.log()[-4000:]}"
    assert " 5" not in "".join(line for line in output.splitlines() if "Server error" in line)
