"""Orchestra: an orchestration sidecar for fleets of AI coding agents.

The server lives in ``orchestra.transport`` and ``orchestra.actors``; the Python SDK is
``orchestra.client``.
"""

#: The distribution's name on the package index (``pip install orchestra-sidecar``).
DISTRIBUTION = "orchestra-sidecar"

__all__ = ["DISTRIBUTION", "__version__"]


def __getattr__(name: str) -> str:
    """``__version__``, said once in pyproject.toml and read from the installed metadata on
    first use (importlib.metadata costs more than a short-lived ``orchestra agent`` should)."""
    if name != "__version__":
        raise AttributeError(f"module 'orchestra' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        value = "0+unknown"
    globals()["__version__"] = value
    return value
