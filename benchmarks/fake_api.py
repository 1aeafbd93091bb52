"""A lean fake Bot API (and OTLP trace sink) for benchmarks: answers fast, counts calls.

Run as its own process so it does not share an event loop with the load generator:
    python -m benchmarks.fake_api --port 18081
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

BOT_USER = {"id": 42, "is_bot": True, "first_name": "bench", "username": "bench_bot"}


def create_app() -> web.Application:
    counts: dict[str, int] = {}
    ids = itertools.count(1)

    async def bot_api(request: web.Request) -> web.Response:
        method = request.match_info["method"]
        counts[method] = counts.get(method, 0) + 1
        result: Any = True
        if method == "sendMessage":
            form = await request.post()
            chat_id = int(str(form["chat_id"]))
            result = {
                "message_id": next(ids),
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "from": BOT_USER,
                "text": str(form.get("text", "")),
            }
        elif method == "getMe":
            result = BOT_USER
        return web.json_response({"ok": True, "result": result})

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        counts["otlp_bytes"] = counts.get("otlp_bytes", 0) + len(body)
        # Root spans are traces: how many updates a sampled run really traced.
        export = ExportTraceServiceRequest.FromString(body)
        spans = [
            span
            for resource in export.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        roots = sum(not span.parent_span_id for span in spans)
        counts["otlp_traces"] = counts.get("otlp_traces", 0) + roots
        counts["otlp_spans"] = counts.get("otlp_spans", 0) + len(spans)
        # By name ("span:sendMessage"): what a traced update is made of.
        for span in spans:
            key = f"span:{span.name}"
            counts[key] = counts.get(key, 0) + 1
        return web.Response(status=200, content_type="application/x-protobuf")

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(counts)

    app = web.Application()
    app.router.add_post("/bot{token}/{method}", bot_api)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(create_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
