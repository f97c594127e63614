"""A FastAPI app instrumented by OpenTelemetry
(opentelemetry-instrumentation-fastapi), exported by
opentelemetry-exporter-prometheus.

The semantic conventions follow OTEL_SEMCONV_STABILITY_OPT_IN as the
instrumentation reads it: unset (the old http_server_duration names),
`http` or `http/dup`. Routes as in fastapi_app; /metrics is
prometheus_client's ASGI app over the exporter's collector.
"""

import asyncio
import random

from fastapi import FastAPI, HTTPException
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import make_asgi_app

metrics.set_meter_provider(
    MeterProvider(
        resource=Resource.create({"service.name": "conformance"}),
        metric_readers=[PrometheusMetricReader()],
    )
)

app = FastAPI()


@app.get("/items/ok")
async def ok():
    await asyncio.sleep(random.uniform(0.002, 0.02))
    return {"ok": True}


@app.get("/items/missing")
async def missing():
    raise HTTPException(status_code=404, detail="no such item")


@app.get("/items/boom")
async def boom():
    raise RuntimeError("unhandled")


app.mount("/metrics", make_asgi_app())
FastAPIInstrumentor.instrument_app(app, excluded_urls="metrics")
