"""The dashboard's PromQL graph widget (lambda/promql_widget): the step it asks for at each
width and range, the SVG it draws for several series and for none, what it shows when the
query API fails (a real HTTP server on loopback answering with an error), and the SigV4
signature of a request to CloudWatch's QueryMetrics (botocore, credentials from the
environment, the prepared request captured: no network)."""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
import xml.etree.ElementTree as ElementTree
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from tests.lambda_handlers import load_handler, load_module

index = load_handler("promql_widget")
chart = load_module("promql_widget", "chart")
promql_api = load_module("promql_widget", "promql_api")

QUERY = 'sum(rate(ray_serve_num_http_requests_total{application!=""}[2m]))'
NOW = 1_767_225_600.0  # 2026-01-01 00:00 UTC
SVG = "{http://www.w3.org/2000/svg}"


def event(query: str = QUERY, *, seconds: float = 3600, width: int = 588, **widget) -> dict:
    """What the dashboard sends (AWS CloudWatch docs, "Details about custom widgets"): the
    params at the top level and in widgetContext."""
    params = {"query": query, "unit": "requests/s"}
    return {**params, "widgetContext": {
        "dashboardName": "ray-serve-ha-serving", "widgetId": "widget-3", "theme": "light",
        "timezone": {"label": "UTC", "offsetISO": "+00:00", "offsetInMinutes": 0},
        "timeRange": {"mode": "relative", "start": int((NOW - seconds) * 1000), "end": int(NOW * 1000)},
        "params": params, "width": width, "height": 300, **widget,
    }}


def svg_of(page: str) -> ElementTree.Element:
    (svg,) = re.findall(r"<svg.*?</svg>", page, re.S)
    return ElementTree.fromstring(svg)


@pytest.mark.parametrize("width", [300, 588, 1200])
@pytest.mark.parametrize("seconds", [300, 3600, 3 * 3600, 86400, 7 * 86400])
def test_the_step_gives_a_point_every_few_pixels_and_is_a_round_number(width, seconds):
    step = chart.step_seconds(NOW - seconds, NOW, width)
    assert step in chart.STEPS_S or step % 86400 == 0
    points = seconds / step
    plot = chart.plot_width(width)
    # At most one point per PIXELS_PER_POINT pixels; rounding up to a round step keeps at
    # least 40 % of that (the widest gap between neighbouring steps is 2 -> 5).
    assert plot / chart.PIXELS_PER_POINT / 2.5 <= points <= plot / chart.PIXELS_PER_POINT


def test_the_step_follows_the_widget_and_its_zoom():
    three_hours = index.widget_frame(event(seconds=3 * 3600)["widgetContext"], NOW)
    assert (three_hours.step, three_hours.end - three_hours.start) == (120, 3 * 3600)
    wider = index.widget_frame(event(seconds=3 * 3600, width=1800)["widgetContext"], NOW)
    assert wider.step < three_hours.step
    zoomed = event(seconds=86400)["widgetContext"]
    zoomed["timeRange"]["zoom"] = {"start": int((NOW - 600) * 1000), "end": int(NOW * 1000)}
    frame = index.widget_frame(zoomed, NOW)
    assert (frame.start, frame.end, frame.step) == (NOW - 600, NOW, 5)


def series(labels: dict[str, str], values: list[float | None], step: int = 60) -> object:
    points = [(NOW - 3600 + i * step, v) for i, v in enumerate(values) if v is not None]
    return promql_api.Series(labels, points)


def test_several_series_are_drawn_one_line_each_with_a_legend_axes_and_the_unit():
    frame = chart.Frame(start=NOW - 3600, end=NOW, step=60, width=588, height=300)
    lines = [series({"__name__": "x", "route": "/v1/chat/completions"}, [1.0, 2.0, 3.5, 2.5]),
             series({"route": "/v1/models"}, [0.5, None, None, 0.5, 0.75])]
    page = chart.render_chart(lines, frame, unit="requests/s", query=QUERY)
    svg = svg_of(page)
    groups = svg.findall(f"{SVG}g")
    assert len(groups) == 2 and groups[0].get("stroke") != groups[1].get("stroke")
    # The second series misses two steps: its line breaks there (a lone point is a dot).
    assert [len(g.findall(f"{SVG}polyline")) for g in groups] == [1, 1]
    assert len(groups[1].findall(f"{SVG}circle")) == 1
    first_points = groups[0].find(f"{SVG}polyline").get("points").split()
    assert len(first_points) == 4
    # Higher values are drawn higher (smaller y), all inside the plot.
    ys = [float(p.split(",")[1]) for p in first_points]
    assert ys[2] == min(ys) and all(chart.TOP <= y <= 300 for y in ys)
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert "requests/s" in texts and "0" in texts and "23:00" in texts
    legend = page[page.index('class="legend"'):]
    assert 'x{route=&quot;/v1/chat/completions&quot;}' in legend and '{route=&quot;/v1/models&quot;}' in legend
    assert "(2.5 requests/s)" in legend


def test_one_series_needs_no_legend_and_a_dark_theme_has_light_text():
    frame = chart.Frame(start=NOW - 3600, end=NOW, step=60, theme="dark")
    page = chart.render_chart([series({}, [5.0, 6.0])], frame, unit="ms", query=QUERY)
    assert "legend" not in page
    assert {t.get("fill") for t in svg_of(page).iter(f"{SVG}text")} == {chart.THEMES["dark"]["text"]}


class Answers(BaseHTTPRequestHandler):
    """A query API on loopback: answers each request with the next (status, body) queued."""

    queued: ClassVar[list[tuple[int, bytes, str]]] = []
    received: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        Answers.received.append({"path": self.path, **form, "authorization": self.headers.get("Authorization", "")})
        status, body, content_type = Answers.queued.pop(0)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_) -> None:
        pass


@pytest.fixture
def api(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Answers.queued.clear()
    Answers.received.clear()
    monkeypatch.setenv("PROMQL_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield Answers.queued
    server.shutdown()
    server.server_close()


def answer(result: list[dict], result_type: str = "matrix") -> tuple[int, bytes, str]:
    body = {"status": "success", "data": {"resultType": result_type, "result": result}}
    return 200, json.dumps(body).encode(), "application/json"


def test_the_handler_asks_for_the_widgets_range_and_step_and_draws_what_comes_back(api):
    api.append(answer([{"metric": {}, "values": [[NOW - 240, "1"], [NOW - 120, "NaN"], [NOW, "2.5"]]}]))
    page = index.render(event(seconds=3 * 3600))
    (sent,) = Answers.received
    assert sent["path"] == "/api/v1/query_range" and sent["query"] == QUERY
    assert (float(sent["start"]), float(sent["end"]), sent["step"]) == (NOW - 3 * 3600, NOW, "120")
    assert sent["limit"] == "20" and sent["authorization"] == ""  # a Prometheus: unsigned
    # NaN is no value: two dots with a gap between them, no line through it.
    assert len(list(svg_of(page).iter(f"{SVG}circle"))) == 2


def test_an_empty_answer_says_no_data_in_this_range_with_the_query(api):
    api.append(answer([]))
    page = index.render(event())
    assert "No data in this range (23:00 to 00:00)" in page
    assert "<pre>sum(rate(ray_serve_num_http_requests_total{application!=&quot;&quot;}[2m]))</pre>" in page
    assert "<svg" not in page


@pytest.mark.parametrize(("status", "body", "content_type", "shown"), [
    (400, b'{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected \\")\\""}',
     "application/json", 'HTTP 400: bad_data: 1:5: parse error: unexpected &quot;)&quot;'),
    (403, b'{"__type":"AccessDeniedException","message":"not authorized to perform: cloudwatch:ListMetrics"}',
     "application/x-amz-json-1.0",
     "HTTP 403: AccessDeniedException: not authorized to perform: cloudwatch:ListMetrics"),
    (503, b"<html>Service Unavailable</html>", "text/html", "HTTP 503: &lt;html&gt;Service Unavailable&lt;/html&gt;"),
    (200, b"not json", "text/plain", "HTTP 200: it is not JSON: not json"),
])
def test_a_failed_query_says_what_failed_never_a_trace(api, status, body, content_type, shown):
    api.append((status, body, content_type))
    page = index.render(event())
    assert "<b>Could not " in page and shown in page
    assert "Traceback" not in page and "<svg" not in page
    assert "ray_serve_num_http_requests_total" in page


def test_an_unreachable_api_says_so(monkeypatch):
    monkeypatch.setenv("PROMQL_ENDPOINT", "http://127.0.0.1:9")
    page = index.render(event())
    assert "<b>Could not reach 127.0.0.1:9</b>" in page and "refused" in page.lower()


def test_no_query_and_the_describe_call_are_answered_in_words():
    assert "needs a `query` parameter" in index.render({"widgetContext": {"params": {}}})
    assert index.render({"describe": True}).startswith("## PromQL graph")


def test_more_series_than_the_limit_are_cut_and_the_graph_says_so(api, monkeypatch):
    monkeypatch.setenv("MAX_SERIES", "2")
    api.append(answer([{"metric": {"pod": str(i)}, "values": [[NOW - 60, "1"], [NOW, "2"]]} for i in range(3)]))
    page = index.render(event())
    assert Answers.received[0]["limit"] == "2"
    assert len(svg_of(page).findall(f"{SVG}g")) == 2 and "At most 2 series are drawn" in page


@pytest.fixture
def role_credentials(monkeypatch):
    """The Lambda role's credentials as the runtime hands them over: environment variables."""
    for name, value in {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLEROLE", "AWS_SECRET_ACCESS_KEY": "example-secret",
                        "AWS_SESSION_TOKEN": "example-session-token", "AWS_CONFIG_FILE": "/nonexistent",
                        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def test_a_request_to_cloudwatch_is_signed_with_sigv4_for_monitoring_in_the_region(role_credentials, monkeypatch):
    captured = []

    def urlopen(request, timeout):  # the prepared request, kept; nothing leaves the machine
        captured.append(request)
        raise OSError("captured")

    monkeypatch.delenv("PROMQL_ENDPOINT", raising=False)
    monkeypatch.setenv("AWS_REGION", "us-east-2")
    monkeypatch.setattr(promql_api.urllib.request, "urlopen", urlopen)
    page = index.render(event())
    assert "Could not reach monitoring.us-east-2.amazonaws.com" in page
    (request,) = captured
    assert request.full_url == "https://monitoring.us-east-2.amazonaws.com/api/v1/query_range"
    assert request.get_method() == "POST"
    authorization = request.get_header("Authorization")
    assert re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=AKIAEXAMPLEROLE/\d{8}/us-east-2/monitoring/aws4_request, "
        r"SignedHeaders=[a-z0-9;-]*\bhost\b[a-z0-9;-]*, Signature=[0-9a-f]{64}", authorization), authorization
    assert "x-amz-date" in authorization and request.get_header("X-amz-security-token") == "example-session-token"
    form = dict(urllib.parse.parse_qsl(request.data.decode()))
    assert form["query"] == QUERY and form["step"] == "30"


def test_the_signature_covers_the_body(role_credentials):
    def signature(query: str) -> str:
        request = promql_api.range_request("https://monitoring.eu-west-1.amazonaws.com", query, start=NOW - 60,
                                           end=NOW, step=1, limit=5, region="eu-west-1")
        return request.get_header("Authorization").rsplit("Signature=", 1)[1]

    assert "/eu-west-1/monitoring/" in promql_api.range_request(
        "https://monitoring.eu-west-1.amazonaws.com", QUERY, start=NOW - 60, end=NOW, step=1, limit=5,
        region="eu-west-1").get_header("Authorization")
    assert signature("up") != signature("down")


def test_only_aws_hosts_are_signed_and_the_default_is_the_regions_monitoring_host():
    assert promql_api.default_endpoint("us-east-2") == "https://monitoring.us-east-2.amazonaws.com"
    assert promql_api.default_endpoint("cn-north-1") == "https://monitoring.cn-north-1.amazonaws.com.cn"
    assert promql_api.is_aws("https://monitoring.us-east-2.amazonaws.com")
    assert not promql_api.is_aws("http://127.0.0.1:9095")
    assert not promql_api.is_aws("https://amazonaws.com.example.org")
