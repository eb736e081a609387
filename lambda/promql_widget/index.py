"""A CloudWatch dashboard custom widget that graphs one PromQL query: the dashboard invokes
it with the widget's `params` and a `widgetContext` (time range, zoom, size in pixels, theme,
time zone: AWS CloudWatch docs, "Details about custom widgets in CloudWatch"); it asks a
Prometheus-compatible `query_range` API for the range, at a step that gives the widget's
width a point every few pixels, and answers with HTML holding an inline SVG line chart.

Runs on the AWS Lambda Python 3.14 runtime (ray_serve_ha/constructs/lambda_code.py) with the
standard library and the runtime's botocore only: no bundling.

Entry point: `index.render`. Widget params: `query` (the PromQL, required), `unit` (the
y axis's label). Environment: PROMQL_ENDPOINT (default: the region's CloudWatch monitoring
host, `https://monitoring.<AWS_REGION>.amazonaws.com`, whose QueryMetrics API is signed with
SigV4 by the function's role; a Prometheus URL such as http://127.0.0.1:9095 is queried
unsigned), QUERY_TIMEOUT_S (default 20), MAX_SERIES (default 20, at most 500).

An empty answer says "No data in this range" with the query; a failed query says what
failed (the HTTP status and the server's message), never a stack trace (that goes to the
function's log).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import chart
import promql_api

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

DEFAULT_TIMEOUT_S = 20.0
DEFAULT_MAX_SERIES = 20
# Without a widgetContext (a test invocation from the console): the last hour.
DEFAULT_RANGE_S = 3600

DESCRIPTION = """## PromQL graph

Graphs one PromQL query over the dashboard's time range.

```yaml
query: sum(rate(ray_serve_num_http_requests_total[2m]))
unit: requests/s
```
"""


def render(event: Mapping[str, Any], context: Any = None) -> str:
    # The dashboard's "describe" call (custom widget samples): the widget's documentation.
    if event.get("describe"):
        return DESCRIPTION
    widget = event.get("widgetContext") or {}
    # The dashboard passes the widget's params at the event's top level and in widgetContext.
    params = {**(widget.get("params") or {}), **{k: v for k, v in event.items() if k != "widgetContext"}}
    query = str(params.get("query") or "").strip()
    if not query:
        return chart.render_message("This widget needs a `query` parameter: the PromQL to graph.")
    frame = widget_frame(widget, time.time())
    try:
        limit = max_series(os.environ)
        # A Prometheus older than the `limit` parameter ignores it: keep to it here too.
        series = query_range(query, frame, limit, os.environ)[:limit]
    except promql_api.QueryError as error:
        logger.warning("query failed: %s (status %s)", error, error.status)
        return chart.render_error(error.what, error.message, error.status, query)
    except Exception as error:  # the widget says what failed; the trace goes to the log
        logger.exception("rendering failed")
        return chart.render_error("draw the graph", f"{type(error).__name__}: {error}", None, query)
    if not any(s.points for s in series):
        return chart.render_empty(query, frame)
    note = f"At most {limit} series are drawn (MAX_SERIES)." if len(series) >= limit else ""
    return chart.render_chart(series, frame, unit=str(params.get("unit") or ""), query=query, note=note)


def widget_frame(widget: Mapping[str, Any], now: float) -> chart.Frame:
    """The range the dashboard shows (its zoom when the viewer zoomed in), the step for the
    widget's width, and how to draw."""
    time_range = widget.get("timeRange") or {}
    zoom = time_range.get("zoom") or {}
    start_ms = zoom.get("start") or time_range.get("start")
    end_ms = zoom.get("end") or time_range.get("end")
    end = float(end_ms) / 1000 if end_ms else now
    start = float(start_ms) / 1000 if start_ms else end - DEFAULT_RANGE_S
    width, height = int(widget.get("width") or 600), int(widget.get("height") or 300)
    return chart.Frame(
        start=start, end=end, step=chart.step_seconds(start, end, width), width=width, height=height,
        theme=str(widget.get("theme") or "light"),
        utc_offset_min=int((widget.get("timezone") or {}).get("offsetInMinutes") or 0),
    )


def query_range(query: str, frame: chart.Frame, limit: int, env: Mapping[str, str]) -> list[promql_api.Series]:
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = env.get("PROMQL_ENDPOINT") or promql_api.default_endpoint(region)
    request = promql_api.range_request(endpoint, query, start=frame.start, end=frame.end, step=frame.step,
                                       limit=limit, region=region)
    return promql_api.fetch(request, float(env.get("QUERY_TIMEOUT_S") or DEFAULT_TIMEOUT_S))


def max_series(env: Mapping[str, str]) -> int:
    return max(1, min(int(env.get("MAX_SERIES") or DEFAULT_MAX_SERIES), promql_api.MAX_LIMIT))
