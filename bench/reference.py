"""The ceiling for HTTP figures: a bare Falcon app on waitress, same thread settings.

Run as ``python -m bench.reference --port 0 --threads 8``; it prints
``listening on http://HOST:PORT`` and answers every POST/GET with a constant JSON body.
"""

from __future__ import annotations

import argparse
import sys

import falcon
import waitress

BODY = b'{"agent_id":"reference","status":"idle","assignments":[],"config_version":1}'


class Constant:
    def on_get(self, req: falcon.Request, resp: falcon.Response, **_: str) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = BODY

    on_post = on_get


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    app = falcon.App()
    app.add_sink(Constant().on_get, "/")
    server = waitress.create_server(app, host="127.0.0.1", port=args.port, threads=args.threads)
    print(f"listening on http://127.0.0.1:{server.effective_port}", flush=True)
    sys.stdout.flush()
    server.run()


if __name__ == "__main__":
    main()
