"""The HTTP recommendation service (`sessrec serve`): FastAPI app, model slot with hot reload,
micro-batching, Prometheus metrics, API-key rules, and the uvicorn server around them.

    schemas.py   request and response models (pydantic): limits and field-naming errors
    batcher.py   one scoring thread per model: concurrent requests are scored as one batch
    slot.py      the model in service and its atomic swap on reload
    metrics.py   Prometheus counters and latency histograms
    security.py  API-key check and the bind-address rule
    app.py       the FastAPI application
    server.py    uvicorn, signals (SIGTERM, SIGHUP), the `serving` event, several workers
    limits.py    request deadlines and the connection cap; protocol.py enforces them (uvicorn's
                 HTTP protocol with header and body timeouts)
    scrape.py    reading a service's /metrics (the app's Serve screen, the serve benchmark)
"""
