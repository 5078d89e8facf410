"""The operator API's client side, shared by every operator command (devices, sites, and later
release, rollout, alerts...). No click here: commands own their flags, this module owns HTTP.

    endpoint = resolve_endpoint(api=None, token=None, data_dir="/var/lib/edgefleet")
    with ApiClient(endpoint) as client:
        devices = client.get("/v1/devices")["devices"]

Where the URL and token come from, first match wins:

    URL     ``api`` (--api / EDGEFLEET_API)  >  DATA_DIR/endpoints.json key "api"  >  DEFAULT_API_URL
    token   ``token`` (--token / EDGEFLEET_TOKEN)  >  DATA_DIR/api_token

Every failure is an ``ApiError`` (the API could not be reached or refused) or a
``ConfigError`` (nothing usable to connect with), each naming the URL or file and
the cause; ``httpx`` errors never leak out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from common.errors import ApiError, ConfigError

__all__ = ["DEFAULT_API_URL", "ENDPOINTS_FILE", "TOKEN_FILE", "ApiClient", "Endpoint", "resolve_endpoint"]

DEFAULT_API_URL = "http://127.0.0.1:8700"
TOKEN_FILE = "api_token"  # in the cloud's data dir: the bearer token, one line
ENDPOINTS_FILE = "endpoints.json"  # in the cloud's data dir: {"api": "http://host:port", ...}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the operator API is and the token it accepts."""

    url: str
    token: str

    def __repr__(self) -> str:  # never print the token
        return f"Endpoint(url={self.url!r}, token=<hidden>)"


def resolve_endpoint(
    api: str | None = None, token: str | None = None, data_dir: str | os.PathLike[str] | None = None
) -> Endpoint:
    """Pick the URL and token from explicit values, then the cloud's data dir, then the default URL."""
    directory = Path(data_dir) if data_dir is not None else None
    url = api or (_endpoints_api(directory) if directory is not None else None) or DEFAULT_API_URL
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"API URL {url!r} must start with http:// or https://")
    if not token and directory is not None:
        token = _read_token(directory / TOKEN_FILE)
    if not token:
        raise ConfigError(
            "no API token: pass --token (or set EDGEFLEET_TOKEN), or --data-dir of the cloud to read its api_token"
        )
    return Endpoint(url=url.rstrip("/"), token=token)


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the API token from {path}: {exc.strerror or exc}") from exc
    if not token:
        raise ConfigError(f"API token file {path} is empty")
    return token


def _endpoints_api(directory: Path) -> str | None:
    path = directory / ENDPOINTS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        api = json.loads(text).get("api")
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"{path} is not a JSON object: {exc}") from exc
    if api is not None and not isinstance(api, str):
        raise ConfigError(f"{path}: key 'api' must be a URL string, got {api!r}")
    return api


class ApiClient:
    """A synchronous client of the operator API; ``transport`` lets tests use ``httpx.MockTransport``."""

    def __init__(
        self, endpoint: Endpoint, *, timeout: float = 10.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.endpoint = endpoint
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=endpoint.url,
            headers={"Authorization": f"Bearer {endpoint.token}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, path: str) -> Any:
        """GET ``path`` (e.g. ``/v1/devices``) and return the decoded JSON body."""
        return self.request("GET", path)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | Iterable[bytes] | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request; return its JSON body or raise ``ApiError`` saying what went wrong.

        ``content`` is a raw body: bytes, or an iterator of pieces sent as they come (an upload
        streamed from a file); ``timeout`` replaces the client's for this request.
        """
        url = self.endpoint.url
        timeout = self._timeout if timeout is None else timeout
        try:
            response = self._http.request(
                method, path, json=json_body, content=content, params=params, headers=headers, timeout=timeout
            )
        except httpx.ConnectError as exc:
            raise ApiError(f"cannot reach the EdgeFleet API at {url}: is `edgefleet cloud` running? ({exc})") from exc
        except httpx.TimeoutException as exc:
            raise ApiError(
                f"the EdgeFleet API at {url} did not answer {method} {path} within {timeout}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise ApiError(f"{method} {path} to the EdgeFleet API at {url} failed: {exc}") from exc
        if response.status_code == 401:
            raise ApiError(
                f"token refused: pass --token or --data-dir (the API at {url} said: {_detail(response)})",
                status=401,
            )
        if response.is_error:
            raise ApiError(
                f"{method} {path} failed at {url} with HTTP {response.status_code}: {_detail(response)}",
                status=response.status_code,
            )
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(f"{method} {path} at {url} answered with a body that is not JSON: {exc}") from exc


def _detail(response: httpx.Response) -> str:
    """The error message from an EdgeFleet error body, FastAPI's ``detail``, or the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "error"):
            if isinstance(body.get(key), str):
                return body[key]
    return str(body)[:200]
