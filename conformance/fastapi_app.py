"""A FastAPI app instrumented by prometheus-fastapi-instrumentator.

Routes: /items/ok answers 200 after 2-20 ms, /items/missing raises
HTTPException(404), /items/boom raises an unhandled exception (500);
/metrics is the instrumentator's endpoint, which reads the multiprocess
directory when PROMETHEUS_MULTIPROC_DIR is set.
"""

import asyncio
import random

from fastapi import FastAPI, HTTPException
from prometheus_fastapi_instrumentator import Instrumentator

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


Instrumentator().instrument(app).expose(app)
