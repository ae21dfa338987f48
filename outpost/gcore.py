"""Gcore's managed DNS API, the runner: sends the requests that outpost.commands.gcore builds,
with the token from the environment, which never appears in an error message.

    apply(api_url, requests, token_env="GCORE_API_TOKEN") -> [answer of each request]
"""
from __future__ import annotations

import json
import os
import urllib.parse

from outpost.commands.gcore import API_URL, REQUEST_TIMEOUT, TOKEN_ENV, TOKEN_HELP, WHERE, Request
from outpost.errors import OutpostError


def apply(api_url: str, requests: list[Request], token_env: str = TOKEN_ENV,
          timeout: float = REQUEST_TIMEOUT) -> list:
    """Send each request with the token from the environment; return Gcore's answers (decoded
    JSON, None for an empty body). The token is never in an error message."""
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise OutpostError(f"{WHERE}: the environment variable {token_env} holds no Gcore API "
                           f"token; {TOKEN_HELP}")
    base = _api_base(api_url)
    import urllib.error  # not at the top: loading the tasks must stay light
    import urllib.request

    answers = []
    for request in requests:
        url = base + request.path
        what = f"Gcore DNS API: {request.method} {url}"
        sent = urllib.request.Request(
            url, data=json.dumps(request.body).encode(), method=request.method,
            headers={"Content-Type": "application/json", "Accept": "application/json",
                     "User-Agent": "outpost"})
        # Unredirected: a redirect to another host must not carry the token along.
        sent.add_unredirected_header("Authorization", f"APIKey {token}")
        try:
            with urllib.request.urlopen(sent, timeout=timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            raise OutpostError(_hide(f"{what} failed: HTTP {err.code} {err.reason}: "
                                     f"{_error_text(err.read())}", token)) from None
        except urllib.error.URLError as err:
            raise OutpostError(_hide(f"{what}: {api_url} is unreachable: {err.reason}",
                                     token)) from None
        except (TimeoutError, OSError) as err:
            raise OutpostError(_hide(f"{what}: no answer from {api_url}: {err}", token)) from None
        try:
            answers.append(json.loads(body) if body.strip() else None)
        except ValueError:
            raise OutpostError(_hide(f"{what} answered something that is not JSON: "
                                     f"{_error_text(body)}", token)) from None
    return answers


def _api_base(api_url: str) -> str:
    """The API's URL without a trailing slash. Plain HTTP would show the token to the network,
    so it is refused except on this machine (the tests' local server)."""
    parts = urllib.parse.urlsplit(api_url)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if not parts.hostname or parts.scheme not in ("https", "http") or (
            parts.scheme == "http" and not loopback):
        raise OutpostError(f"{WHERE}: the API URL {api_url!r} must be https:// (the token must "
                           f"not cross the network in clear), e.g. {API_URL}")
    return api_url.rstrip("/")


def _error_text(body: bytes) -> str:
    """Gcore's message from an error body ({"error": "..."}), else the body itself, shortened."""
    text = body.decode("utf-8", "replace").strip()
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict):
        for key in ("error", "message", "detail"):
            if decoded.get(key):
                text = str(decoded[key])
                break
    text = " ".join(text.split())
    return (text[:500] + "...") if len(text) > 500 else (text or "(no message)")


def _hide(message: str, token: str) -> str:
    return message.replace(token, "<token>")
