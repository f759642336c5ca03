"""Orchestra: an orchestration sidecar for fleets of AI coding agents.

The server lives in ``orchestra.transport`` and ``orchestra.actors``; the Python SDK is
``orchestra.client``.
"""

from importlib.metadata import PackageNotFoundError, version

#: The distribution's name on the package index (``pip install orchestra-sidecar``).
DISTRIBUTION = "orchestra-sidecar"

try:
    #: Said once, in pyproject.toml; read here from the installed metadata.
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["DISTRIBUTION", "__version__"]
