"""The WSGI application: media handlers registered once, resources given their collaborators.

No statistics are computed in the web layer; every number comes from :class:`tradestats.Store`.
The exact status codes and ``detail`` texts are the contract in ../shared/API.md.
"""
from __future__ import annotations

import falcon
import orjson
from falcon import media

from tradestats import Store, limits
from tradestats.web.access import ApiKeyCheck
from tradestats.cluster.placement import PlacementFile
from tradestats.web.access_log import AccessLog
from tradestats.web.cluster import ClusteredStore
from tradestats.web.docs import SWAGGER_UI_FILES, DocsResource, OpenApiResource
from tradestats.web.errors import out_of_resources, serialize_error
from tradestats.web.metrics import Metrics, MetricsMiddleware, MetricsResource
from tradestats.web.openapi import openapi_document
from tradestats.web.page import PAGE_FILES, PageResource
from tradestats.web.protocol import ProtocolCheck
from tradestats.web.resources import (
    AddBatchResource,
    EnvelopeResource,
    HealthResource,
    PricesResource,
    SerializedStore,
    StatsResource,
    SymbolsResource,
)


#: orjson parses and dumps a 10,000-number batch about 15 times faster than the stdlib json (see
#: the README); it also refuses NaN/Infinity when parsing and writes NaN as null, so every body we
#: send is RFC 8259 JSON.
JSON_HANDLER = media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)


def create_app(
    store: Store | None = None,
    *,
    max_k: int = limits.DEFAULT_MAX_K,
    max_symbols: int = limits.DEFAULT_MAX_SYMBOLS,
    max_batch: int = limits.DEFAULT_MAX_BATCH,
    max_body_bytes: int = limits.DEFAULT_MAX_BODY_BYTES,
    access_log: bool = False,
    api_key: str | None = None,
    protect_reads: bool = False,
    placement: PlacementFile | None = None,
) -> falcon.App:
    """The WSGI application over ``store``.

    ``max_k`` and ``max_symbols`` build a new Store when none is given; a given store keeps its own
    limits, and its ``max_k`` bounds the ``k`` parameter either way. With ``api_key`` every write
    (and with ``protect_reads`` every read of data) needs ``Authorization: Bearer <key>``
    (web/access.py). With ``placement`` (a cluster node's: web/cluster.py) a symbol another
    node owns is refused with 421.
    """
    if store is None:
        store = Store(max_symbols=max_symbols, max_k=max_k)
    shared_store = SerializedStore(store)
    if placement is not None:
        store.admit = placement.admit
        shared_store = ClusteredStore(shared_store, placement, api_key)
    metrics = Metrics(store)

    middleware = [MetricsMiddleware(metrics), ProtocolCheck()]
    if api_key:
        middleware.append(ApiKeyCheck(api_key, protect_reads))
    if access_log:
        middleware.append(AccessLog())
    app = falcon.App(media_type=falcon.MEDIA_JSON, middleware=middleware)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = JSON_HANDLER
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = JSON_HANDLER
    app.set_error_serializer(serialize_error)
    app.add_error_handler(MemoryError, out_of_resources)
    app.add_error_handler(OSError, out_of_resources)

    def route(paths: tuple[str, ...], resource) -> None:
        # HEAD answers like GET on every route (Falcon drops the body): probes and caches use it.
        if hasattr(resource, "on_get") and not hasattr(resource, "on_head"):
            resource.on_head = resource.on_get
        for path in paths:
            app.add_route(path, resource)

    add_batch = AddBatchResource(shared_store, max_batch=max_batch, max_body_bytes=max_body_bytes,
                                 on_added=metrics.batch_added)
    stats = StatsResource(shared_store)
    # Existing clients call both spellings; both must stay the same endpoint.
    route(("/add_batch/", "/add_batch"), add_batch)
    route(("/stats/", "/stats"), stats)
    route(("/symbols", "/symbols/"), SymbolsResource(shared_store))
    route(("/prices/", "/prices"), PricesResource(shared_store))
    route(("/envelope/", "/envelope"), EnvelopeResource(shared_store))
    route(("/health",), HealthResource())
    route(("/metrics",), MetricsResource(metrics))
    document = openapi_document(max_k=store.max_k, max_batch=max_batch,
                                max_body_bytes=max_body_bytes, api_key=bool(api_key),
                                protect_reads=protect_reads, cluster=placement is not None)
    route(("/openapi.json",), OpenApiResource(document))
    route(("/docs",), DocsResource())
    app.add_static_route("/docs/assets", str(SWAGGER_UI_FILES))
    route(("/",), PageResource(store.max_k))
    app.add_static_route("/page/assets", str(PAGE_FILES))
    return app
