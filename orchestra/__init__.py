"""Orchestra: an orchestration sidecar for fleets of AI coding agents.

The server lives in ``orchestra.transport`` and ``orchestra.actors``; the Python SDK is
``orchestra.client``.
"""

__version__ = "0.1.0"
