"""A clean install: `pip install calsync` puts one package, `calsync`, into site-packages,
and none of the generic names the repository's folders have (server, storage, handlers,
migrations) that would collide with anything else of those names."""
from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_fresh_environment_with_only_calsync_imports_calsync_and_no_generic_name(tmp_path):
    env = tmp_path / "venv"
    venv.create(env, with_pip=True, system_site_packages=False)
    python = env / "bin" / "python"
    # A wheel built here, installed without its dependencies: only calsync's own files
    # land in site-packages.
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("calsync-*.whl"))
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, capture_output=True,
                   timeout=300)
    probe = (
        "import importlib.util, pathlib, sysconfig\n"
        "import calsync, calsync.storage.errors, calsync.migrations, calsync.handlers, calsync.server\n"
        "site = pathlib.Path(sysconfig.get_paths()['purelib'])\n"
        "print(calsync.__version__)\n"
        "print(sorted(p.name for p in site.iterdir() if not p.name.endswith(('-info', '.pth')) and p.name != '__pycache__'"
        " and not p.name.startswith(('_distutils', 'pip', 'setuptools', 'pkg_resources', '_virtualenv'))))\n"
        "print([name for name in ('server', 'storage', 'handlers', 'migrations') if importlib.util.find_spec(name)])\n"
        "print(pathlib.Path(calsync.storage.errors.__file__).relative_to(site))\n"
    )
    result = subprocess.run([python, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    version, top_level, generic, errors_path = result.stdout.splitlines()
    assert version == "0.1.0"
    assert top_level == "['calsync']"
    assert generic == "[]"
    assert errors_path == "calsync/storage/errors.py"
    entry_points = next((env / "lib").glob("python*/site-packages/calsync-*.dist-info/entry_points.txt")).read_text()
    assert "calsync = calsync.cli:main" in entry_points
    assert "sqlite = calsync.storage.sqlite:SqliteStorage" in entry_points
    assert (env / "bin" / "calsync").exists()
