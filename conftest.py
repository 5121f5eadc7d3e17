"""Repository-wide pytest setup.

The `lab` fixture, the feature marker and the reports come from the redis-mesh-lab
pytest plugin (lab/pytest_plugin.py), registered through the `pytest11` entry point when
the package is installed (`pip install -e .`, as nox and .ci/run do).
"""

collect_ignore_glob = [".lab/*", ".nox/*", "reports/*", ".venv/*"]
