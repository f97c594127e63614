"""A plain WSGI app instrumented with prometheus_client, for uWSGI.

`app_requests_total{route,status}` counts every answer and
`app_request_duration_seconds{route}` times it. Routes: /items/ok answers
200 after 2-20 ms, /items/missing 404, /items/boom raises, and the
application answers 500 as a framework would (uWSGI itself would close
the connection without an answer); /metrics reads the multiprocess directory when
PROMETHEUS_MULTIPROC_DIR is set, else this process' registry.
"""

import os
import random
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    make_wsgi_app,
    multiprocess,
)

REQUESTS = Counter("app_requests", "Requests answered", ["route", "status"])
DURATION = Histogram("app_request_duration_seconds", "Time to answer", ["route"])

if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    metrics = make_wsgi_app(registry)
else:
    metrics = make_wsgi_app()


def ok(start_response):
    time.sleep(random.uniform(0.002, 0.02))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]


def missing(start_response):
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no such item\n"]


def boom(start_response):
    raise RuntimeError("unhandled")


ROUTES = {"/items/ok": ("ok", ok), "/items/missing": ("missing", missing), "/items/boom": ("boom", boom)}


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/metrics":
        return metrics(environ, start_response)
    route, handler = ROUTES.get(path, ("other", missing))
    start = time.perf_counter()
    status = "500"

    def respond(line, headers, exc_info=None):
        nonlocal status
        status = line.split(" ", 1)[0]
        return start_response(line, headers, exc_info)

    try:
        return handler(respond)
    except Exception:
        respond("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"internal error\n"]
    finally:
        DURATION.labels(route).observe(time.perf_counter() - start)
        REQUESTS.labels(route, status).inc()
