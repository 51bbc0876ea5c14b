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
        "import calsync, calsync.storage.errors, calsync.migrations, calsync.handlers, calsync.server.version\n"
        "site = pathlib.Path(sysconfig.get_paths()['purelib'])\n"
        "print(calsync.server.version.__version__)\n"
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


FOLDERS = ("server", "handlers", "storage", "migrations", "web")


def test_the_import_graph_sees_every_module_and_the_layers_hold():
    """What import-linter and mypy see: every .py file under the five folders is a module of
    `calsync`, found statically (grimp reads files; nothing is imported or executed), and the
    layer contracts in setup.cfg hold."""
    import grimp  # import-linter's graph builder

    on_disk = set()
    for folder in FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            on_disk.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    graph = grimp.build_graph("calsync", include_external_packages=True)
    assert on_disk - graph.modules == set()
    assert len(on_disk) > 50
    assert "tornado" in graph.modules and graph.chain_exists(importer="calsync.handlers", imported="tornado", as_packages=True)
    assert not graph.chain_exists(importer="calsync.storage", imported="tornado", as_packages=True)
    for importer, imported in [("calsync.migrations", "calsync.server"), ("calsync.server", "calsync.handlers"),
                               ("calsync.storage", "calsync.server"), ("calsync.handlers", "calsync.migrations")]:
        assert not graph.chain_exists(importer=importer, imported=imported, as_packages=True), (importer, imported)
