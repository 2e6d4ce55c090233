"""notifier as a library: the wheel a checkout builds carries the code, the
dev page's template and the browser helper, and asks for the runtime
dependencies only; installed from it (not the checkout), it serves; and
``make run`` installs without the dev extra."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = {"flask", "gevent", "gunicorn", "redis", "flask-jwt-extended", "prometheus-client", "flask-cors"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=240)
    [built] = out.glob("notifier-*.whl")
    return built


def test_the_wheel_holds_the_package_and_its_files_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "notifier/static/client.js" in names and "notifier/templates/dev.html" in names
    assert "notifier/py.typed" in names
    outside = {name.split("/")[0] for name in names} - {"notifier", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    assert outside == set(), "no tests, bench or examples in the wheel"


def test_the_wheel_requires_the_runtime_only(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    metadata = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA"))).decode()
    unconditional = {line.split(":", 1)[1].strip() for line in metadata.splitlines()
                     if line.startswith("Requires-Dist:") and "extra ==" not in line}
    names = {requirement.split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
             for requirement in unconditional}
    assert names == RUNTIME


def test_installed_from_the_wheel_it_serves_the_helper(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=120)
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import notifier; from notifier.config import Config;"
        "assert notifier.__file__.startswith(sys.argv[1]), notifier.__file__;"
        "app = notifier.create_app(Config.for_testing());"
        "r = app.test_client().get('/v1/client.js');"
        "print(r.status_code, r.mimetype, b'export' in r.data)"
    )
    result = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.stdout.splitlines()[-1].split() == ["200", "text/javascript", "True"], result.stderr


def test_make_run_installs_the_runtime_and_make_test_the_dev_tools() -> None:
    def plan(target: str) -> str:
        return subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True,
                              timeout=30).stdout

    run, test = plan("run"), plan("test")
    assert "-c constraints.txt -e .\n" in run and "[dev]" not in run
    assert "-e '.[dev]'" in test
