"""colcon's ament_python build runs this file; the package metadata lives in pyproject.toml.

Only what ament needs is added here: the ament index marker, package.xml, and the launch and
config files and the bundled policies installed under share/<package>.
"""

from glob import glob
from pathlib import Path
from typing import Any

from setuptools import find_packages, setup

PACKAGE = "policy_runtime"
ROOT = Path(__file__).resolve().parent


def _metadata_without_pyproject() -> dict[str, Any]:
    """Name, version, packages and scripts when pyproject.toml is not beside the working directory.

    `colcon build --symlink-install` runs `setup.py develop` in its build directory, where it links
    setup.py, setup.cfg and the top-level packages but not pyproject.toml; setuptools would then
    see no name, packages or `prt` entry point. Read them from the real pyproject.toml instead.
    """
    if Path("pyproject.toml").is_file():
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    with open(ROOT / "pyproject.toml", "rb") as f:
        pyproject = tomllib.load(f)
    project = pyproject["project"]
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return {
        "name": project["name"],
        "version": project["version"],
        "packages": find_packages(str(ROOT), include=include),
        "entry_points": {
            "console_scripts": [f"{name} = {ref}" for name, ref in project["scripts"].items()]
        },
    }


setup(
    # A string here, not `requires-python` in pyproject.toml: setuptools turns that into a
    # SpecifierSet, which colcon's setup.py reader cannot parse (SyntaxError in ast.literal_eval).
    python_requires=">=3.10",
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.launch.yaml"))),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml") + glob("config/*.xml"))),
        *(
            (f"share/{PACKAGE}/{bundle}", sorted(glob(f"{bundle}/*")))
            for bundle in sorted(glob("bundles/*"))
        ),
    ],
    **_metadata_without_pyproject(),
)
