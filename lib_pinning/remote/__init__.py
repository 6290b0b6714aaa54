"""Pinning on remote WebUI / Forge servers over their HTTP API (`--api`), several at once.

`client.py`: one server (requests, errors by whom they blame, the checks); `payload.py`: the API
payload of a batch and the reading of its response; `pool.py`: `RemoteGenerator`, the Generator
over one or more servers with parallel evaluation, fail-over and cancel forwarding.
"""

from lib_pinning.remote.client import (
    AuthFailed, BatchStopped, RemoteError, RequestRejected, ServerConfig, ServerUnavailable, WebUIClient,
)
from lib_pinning.remote.payload import Img2ImgImages, RemoteSettings
from lib_pinning.remote.pool import RemoteGenerator, ServerCheckFailed

__all__ = [
    "AuthFailed", "BatchStopped", "Img2ImgImages", "RemoteError", "RemoteGenerator", "RemoteSettings", "RequestRejected",
    "ServerCheckFailed", "ServerConfig", "ServerUnavailable", "WebUIClient",
]
