"""Query a running RoHDE server's REST API, and optionally switch the active model.

    python client_examples/rest_example.py                          # http://127.0.0.1:8000
    ROHDE_ADMIN_TOKEN=secret python client_examples/rest_example.py --activate other-model

Uses only the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any


def call(base: str, path: str, *, method: str = "GET", body: dict[str, Any] | None = None,
         token: str | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument("--activate", default=None, help="model package to activate (needs ROHDE_ADMIN_TOKEN)")
    args = parser.parse_args()
    out = sys.stdout
    for path in ("/health", "/ready", "/models", "/models/active"):
        status, text = call(args.url, path)
        out.write(f"GET {path} -> {status}\n{json.dumps(json.loads(text), indent=2)[:1500]}\n\n")
    status, text = call(args.url, "/streams")
    for stream in json.loads(text)["streams"]:
        quality = stream["quality"] or {}
        out.write(f"stream {stream['stream_id']}: {stream['state']} {stream['reason']} "
                  f"{stream['n_channels']} ch {stream['fs_hz']} Hz, bad channels {quality.get('bad_channels')}\n")
    status, text = call(args.url, "/metrics")
    out.write("".join(line + "\n" for line in text.splitlines() if line.startswith("rohde_windows")))
    if args.activate:
        status, text = call(args.url, "/models/active", method="PUT", body={"name": args.activate},
                            token=os.environ.get("ROHDE_ADMIN_TOKEN"))
        out.write(f"PUT /models/active {args.activate} -> {status}: {text}\n")
        return 0 if status == 200 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
