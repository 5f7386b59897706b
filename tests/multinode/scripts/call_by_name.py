"""Call a fleet server by name, as a user script on any node would.

``call_by_name.py HEAD_HOST HEAD_PORT NAME PATH JSON`` prints one JSON line: status, the URL the name
resolved to, and the body.
"""

from __future__ import annotations

import asyncio
import json
import sys

from gymfleet import transport
from gymfleet.client import ServerClient


async def main(host: str, port: str, name: str, path: str, body: str) -> None:
    client = ServerClient.load_from_global_config(
        {"host": host, "port": int(port)}, late_binding_timeout_s=10.0
    )
    try:
        resp = await client.post(server_name=name, url_path=path, json=json.loads(body))
        sys.stdout.write(
            json.dumps({"status": resp.status, "url": resp.url, "body": await resp.json()}) + "\n"
        )
    finally:
        await transport.close_sessions()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
