"""The "limit" app for benchmarks/bench_http.py: what the HTTP stack alone allows.

A minimal Falcon app with the same routes as tradestats, served by exactly the configuration of
``tradestats-serve`` (``tradestats.server.run_server``: same server, workers, threads, buffers
and logging). It does what every request needs from the stack and nothing of tradestats' own:

- ``POST /add_batch/`` reads and parses the JSON body with the same orjson media handler as the
  real app, stores nothing, and answers the real success body;
- ``GET /stats/`` answers a constant stats body (same shape and size as a real one) through the
  same media handler, without looking at the query or any data.

So tradestats' requests/s divided by this app's is how close tradestats gets to the stack's own
ceiling. It takes the same flags as ``tradestats-serve`` (the store-related ones are accepted and
ignored):

    python benchmarks/limit_app.py --host 127.0.0.1 --port 8001
"""
from __future__ import annotations

from typing import Sequence

import falcon
import orjson
from falcon import media

from tradestats import server

JSON_HANDLER = media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)

BATCH_ADDED = {"message": "Batch data added successfully"}
#: Same keys and typical number lengths as a real /stats/ reply.
CONSTANT_STATS = {
    "symbol": "BENCH0",
    "min": 1481.27,
    "max": 1523.94,
    "last": 1502.61,
    "avg": 1501.8843719999998,
    "var": 97.40127436800001,
}


class AddBatchResource:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.get_media()  # read + orjson.loads, like the real app; the document is thrown away
        resp.media = BATCH_ADDED


class StatsResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = CONSTANT_STATS


class HealthResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


def create_limit_app() -> falcon.App:
    app = falcon.App(media_type=falcon.MEDIA_JSON)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = JSON_HANDLER
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = JSON_HANDLER
    add_batch, stats = AddBatchResource(), StatsResource()
    for path in ("/add_batch/", "/add_batch"):
        app.add_route(path, add_batch)
    for path in ("/stats/", "/stats"):
        app.add_route(path, stats)
    app.add_route("/health", HealthResource())
    return app


def main(argv: Sequence[str] | None = None) -> None:
    settings = server.parse_settings(argv)
    server.run_server(
        settings,
        lambda server_name: [f"limit app (bench_http.py): {server_name}, {settings.workers} "
                             f"workers, listening on {settings.url}"],
        lambda settings: create_limit_app(),
    )


if __name__ == "__main__":
    main()
