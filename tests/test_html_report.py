"""The single-file HTML report: verdicts on the landing view, the implementation in full at
the top and on every test, one row per test (two profiles' results merged, as `nox -s e2e`
does), an xfail as a known failure linking its upstream bug, no truncated key, no fixture
row without a status, a link to conformance.yaml, and no network request when opened
(headless Chromium)."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lab.reporting import html
from tests.chromium import chromium, open_page
from tests.conftest import ROOT

pytestmark = [pytest.mark.skipif(not shutil.which("npm") or not chromium(),
                                 reason="needs npm (Allure Report 3) and chromium"),
              # the tests share the module's report (`run`): under pytest-xdist with --dist
              # loadgroup (as `nox -s tests` runs) one worker builds it once and runs them all
              pytest.mark.xdist_group("test_html_report.run")]

CONFTEST = '''
import pytest

class _Lab:
    """Stands in for a lab: the report only needs what it says about the implementation."""
    captures: list = []

    def implementation(self):
        return {"lab": "html", "backend": "local", "envoyVersion": "1.40.0",
                "redisVersion": "6.2.5", "readPolicy": "MASTER", "mirrorEnabled": True,
                "controlPlane": "builtin patcher", "envoyfilters": ["break-reads.yaml"]}

    def diagnostics(self):
        return {"cluster-nodes.txt": "(nodes)"}

@pytest.fixture(scope="session")
def lab():
    return _Lab()
'''

SUITE = '''
import pytest

@pytest.mark.feature("Sharding")
def test_keys(lab):
    """Every key lands on the master that owns its slot"""

@pytest.mark.feature("ReadPolicyReplica")
def test_reads(lab):
    """Every read reaches the key's replica, never its master"""
    assert False, "GET reached redis-cluster-0 (a master)"

@pytest.mark.feature("WriteMirroring")
@pytest.mark.xfail(strict=True, reason="envoyproxy/envoy#22729: XADD is not mirrored")
def test_xadd_mirrored(lab):
    """XADD through the proxy reaches the mirror"""
    assert False
'''
READY = "document.body.innerText.includes('Sharding: success')"
# Once ready: the text of every element the page shows cut short (CSS ellipsis), appended.
TRUNCATED = ("(() => { if (!document.body.innerText.includes('Sharding: success')) return false;"
             " const cut = [...document.querySelectorAll('body *')].filter(e => "
             "e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).textOverflow === "
             "'ellipsis').map(e => e.innerText);"
             " document.body.append('TRUNCATED=' + JSON.stringify(cut)); return true; })()")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("html-project")
    (project / "conftest.py").write_text(CONFTEST)
    (project / "test_suite.py").write_text(SUITE)
    # the build cache stays: Allure is installed there once, for every test and every checkout
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("REDIS_MESH_LAB_") or k == "REDIS_MESH_LAB_CACHE"}
    for profile in ("tutorial", "extended"):  # as nox -s e2e: the second pass skips them all
        done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                               "--lab-profile", profile, "--lab-reports", profile],
                              cwd=project, capture_output=True, text=True, timeout=120,
                              env={**env, "PYTHONPATH": str(ROOT)}, check=False)
        assert done.returncode == (1 if profile == "tutorial" else 12), done.stdout + done.stderr
    latest = (project / "tutorial" / "latest").resolve()
    for result in (project / "extended" / "latest" / "allure-results").iterdir():
        shutil.copyfile(result, latest / "allure-results" / result.name)
    html.build(latest)
    return latest


def test_allure_output_carries_an_analytics_tag_that_build_removes(run: Path, tmp_path: Path):
    raw = html.generate(run, tmp_path / "raw").read_text(encoding="utf-8")
    assert "googletagmanager.com" in raw  # what Allure 3.18 writes into every page
    assert "googletagmanager" not in html.strip_analytics(raw)
    assert "googletagmanager" not in (run / "html" / "index.html").read_text(encoding="utf-8")


def test_opening_the_report_requests_nothing_from_the_network(run: Path, tmp_path: Path):
    page = open_page((run / "html" / "index.html").as_uri(), READY)
    assert page.requests, "the network log recorded nothing: the check would be void"
    assert all(url.startswith(("file://", "data:")) for url in page.requests), [
        url[:80] for url in page.requests if not url.startswith(("file://", "data:"))]
    (tmp_path / "landing.png").write_bytes(page.screenshot)


def test_the_network_check_sees_a_remote_request(run: Path, tmp_path: Path):
    """The same check fails a page that loads a script from a server (as Allure's analytics
    tag would). The server is on loopback: it answers at once, so the page loads without
    waiting on a network this machine may not have, and no request leaves the machine."""
    class Script(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"window.remoteScriptRan = true;"
            self.send_response(200)
            self.send_header("Content-Type", "application/javascript")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Script)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        remote = f"http://127.0.0.1:{server.server_address[1]}/gtag/js"
        page_file = tmp_path / "index.html"
        page_file.write_text((run / "html" / "index.html").read_text(encoding="utf-8").replace(
            "</head>", f'<script async src="{remote}"></script></head>', 1), encoding="utf-8")
        page = open_page(page_file.as_uri(), READY)
    finally:
        server.shutdown()
        server.server_close()
    assert remote in page.requests, page.requests


def test_landing_view_lists_every_feature_with_its_verdict(run: Path):
    page = open_page((run / "html" / "index.html").as_uri(), READY)
    for line in ("Sharding: success", "ReadPolicyReplica: failure",
                 "TopologyDiscovery: notCovered", "WriteMirroring: skipped",
                 "profile tutorial failure"):
        assert line in page.text, line
    for panel in ("backend", "local", "envoy", "1.40.0", "read policy", "MASTER",
                  "break-reads.yaml"):
        assert panel in page.text, panel


def test_every_test_shows_the_implementation_and_links_the_verdicts(run: Path):
    data = json.loads((run / "html" / "test-results.json").read_text())
    failed = next(t for t in data["byId"].values()
                  if t["status"] == "failed" and not t["name"].startswith("Known failure"))
    assert failed["name"] == "Every read reaches the key's replica, never its master"
    page = open_page(f"{(run / 'html' / 'index.html').as_uri()}#/{failed['id']}",
                     "document.body.innerText.includes('conformance.yaml')")
    for text in ("read policy", "MASTER", "mirror", "Envoy", "1.40.0", "extra EnvoyFilters",
                 "break-reads.yaml", "conformance.yaml (this run's verdicts)"):
        assert text.lower() in page.text.lower(), text
    assert "_redis_mesh_lab" not in page.text  # no internal fixture in Set up


def test_one_row_per_test_and_an_xfail_is_a_known_failure_with_its_bug(run: Path):
    data = json.loads((run / "html" / "test-results.json").read_text())
    names = sorted(t["name"] for t in data["byId"].values())
    assert len(names) == 4, names  # 3 tests and the feature no test proves
    assert not any(name.startswith("test_") for name in names), names  # no skipped copy
    known = next(t for t in data["byId"].values() if "XADD" in t["name"])
    assert known["name"] == "Known failure: XADD through the proxy reaches the mirror"
    assert known["status"] == "failed" and known["status"] != "skipped"
    page = open_page(f"{(run / 'html' / 'index.html').as_uri()}#/{known['id']}",
                     "document.body.innerText.includes('envoyproxy/envoy#22729')")
    assert "Known failure (strict xfail): envoyproxy/envoy#22729" in page.text


def test_the_implementation_is_whole_at_the_top_and_nothing_is_cut_short(run: Path,
                                                                          tmp_path: Path):
    page = open_page((run / "html" / "index.html").as_uri(), TRUNCATED)
    (tmp_path / "top.png").write_bytes(page.screenshot)
    top = page.text.split("Search tests")[0]  # the summary and metadata, above the tree
    for text in ("profile", "tutorial: failure", "backend", "local", "control plane",
                 "builtin, v", "envoy", "1.40.0", "redis", "6.2.5",
                 "read policy", "MASTER", "mirror", "on", "extra filters",
                 "break-reads.yaml"):
        assert text in top, text
    assert "Show more" not in top  # every line of the implementation shown, none folded
    assert page.text.rsplit("TRUNCATED=", 1)[1].strip() == "[]"
    assert "test_keys" not in page.text  # the extended pass's skipped copy is not a row


def test_no_fixture_row_without_a_status():
    data = {"children": ["kept", "dropped"],
            "befores": [{"name": "lab", "status": "passed"}],
            "afters": [{"name": "lab::1", "status": "passed"}, {"name": "lab::<lambda>"}]}
    shown = html._container(data, {"kept"})
    assert shown["children"] == ["kept"]
    assert shown["befores"] == [{"name": "lab", "status": "passed"}]
    assert shown["afters"] == [{"name": "lab (teardown)", "status": "passed"}]
