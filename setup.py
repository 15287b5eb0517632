"""Package discovery: the repository root *is* the package ``mixerzoo``.

Metadata lives in pyproject.toml; this file only maps the root folder to the import name
``mixerzoo`` and finds every sub-package, so new sub-packages need no edit here.
"""

from setuptools import find_packages, setup

_SUBPACKAGES = find_packages(where=".", exclude=["tests*", "benchmarks*", "configs*", "build*"])

setup(
    package_dir={"mixerzoo": "."},
    packages=["mixerzoo"] + [f"mixerzoo.{name}" for name in _SUBPACKAGES],
)
