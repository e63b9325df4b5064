"""Small flow builders for the Node-RED tests (plain Node-RED flow JSON)."""

from __future__ import annotations

from typing import Any


def tab(tab_id: str, label: str = "labkit test") -> dict[str, Any]:
    return {"id": tab_id, "type": "tab", "label": label, "disabled": False, "info": ""}


def http_in(node_id: str, z: str, url: str, wires: list[list[str]], method: str = "get") -> dict[str, Any]:
    return {"id": node_id, "type": "http in", "z": z, "name": "", "url": url, "method": method,
            "upload": False, "swaggerDoc": "", "wires": wires}


def function(node_id: str, z: str, code: str, wires: list[list[str]]) -> dict[str, Any]:
    return {"id": node_id, "type": "function", "z": z, "name": "", "func": code, "outputs": len(wires),
            "timeout": 0, "noerr": 0, "initialize": "", "finalize": "", "libs": [], "wires": wires}


def http_response(node_id: str, z: str) -> dict[str, Any]:
    return {"id": node_id, "type": "http response", "z": z, "name": "", "statusCode": "", "headers": {},
            "wires": []}


def kafka_broker(node_id: str, brokers: str) -> dict[str, Any]:
    return {"id": node_id, "type": "labkit-kafka-broker", "name": "", "brokers": brokers, "clientId": "labkit-test"}


def kafka_in(node_id: str, z: str, broker: str, topic: str, group_id: str, wires: list[list[str]],
             from_beginning: bool = True, max_in_flight: int = 0, ack_timeout_s: int = 60) -> dict[str, Any]:
    return {"id": node_id, "type": "labkit-kafka-in", "z": z, "name": "", "broker": broker, "topic": topic,
            "groupId": group_id, "fromBeginning": from_beginning, "maxInFlight": max_in_flight,
            "ackTimeout": ack_timeout_s, "wires": wires}


def kafka_out(node_id: str, z: str, broker: str, topic: str) -> dict[str, Any]:
    return {"id": node_id, "type": "labkit-kafka-out", "z": z, "name": "", "broker": broker, "topic": topic,
            "wires": []}


def smoke_flow() -> list[dict[str, Any]]:
    """GET /smoke -> function -> response; POST /smoke/upload -> body size -> response."""
    z = "smoketab0000001"
    return [
        tab(z, "smoke"),
        http_in("smokein000001", z, "/smoke", [["smokefn000001"]]),
        function("smokefn000001", z,
                 "msg.payload = {answer: 6 * 7, query: msg.payload, from: 'labkit-smoke'};\nreturn msg;",
                 [["smokeout00001"]]),
        http_response("smokeout00001", z),
        http_in("uploadin00001", z, "/smoke/upload", [["uploadfn00001"]], method="post"),
        function("uploadfn00001", z,
                 "const b = msg.payload;\n"
                 "const n = Buffer.isBuffer(b) ? b.length : (typeof b === 'string' ? Buffer.byteLength(b) "
                 ": Buffer.byteLength(JSON.stringify(b)));\n"
                 "msg.payload = {bytes: n};\nreturn msg;",
                 [["uploadout0001"]]),
        http_response("uploadout0001", z),
    ]


def steps_flow() -> list[dict[str, Any]]:
    """GET /smoke/steps -> a function node that reports the libraries of its global context."""
    z = "stepstab000001"
    return [
        tab(z, "steps"),
        http_in("stepsin0000001", z, "/smoke/steps", [["stepsfn0000001"]]),
        function("stepsfn0000001", z,
                 'const steps = global.get("steps");\n'
                 'msg.payload = {steps: steps ? Object.keys(steps).sort() : null, minio: typeof global.get("minio"),\n'
                 '               ok: steps ? steps.tokenMatches("t", "t") : null};\n'
                 "return msg;",
                 [["stepsout000001"]]),
        http_response("stepsout000001", z),
    ]


def dashboard_flow() -> list[dict[str, Any]]:
    """A Dashboard 2.0 base at /dashboard with one page holding a ui-chart fed by an inject node."""
    z = "dashtab0000001"
    return [
        tab(z, "dashboard"),
        {"id": "dashbase000001", "type": "ui-base", "name": "labkit", "path": "/dashboard",
         "includeClientData": True, "acceptsClientConfig": ["ui-notification", "ui-control"],
         "showPathInSidebar": False, "navigationStyle": "default", "titleBarStyle": "default"},
        {"id": "dashtheme00001", "type": "ui-theme", "name": "default",
         "colors": {"surface": "#ffffff", "primary": "#0094CE", "bgPage": "#eeeeee", "groupBg": "#ffffff",
                    "groupOutline": "#cccccc"},
         "sizes": {"pagePadding": "12px", "groupGap": "12px", "groupBorderRadius": "4px", "widgetGap": "12px"}},
        {"id": "dashpage000001", "type": "ui-page", "name": "Pipeline", "ui": "dashbase000001", "path": "/pipeline",
         "icon": "home", "layout": "grid", "theme": "dashtheme00001", "order": 1, "className": "",
         "visible": "true", "disabled": "false"},
        {"id": "dashgroup00001", "type": "ui-group", "name": "Latency", "page": "dashpage000001", "width": "6",
         "height": "1", "order": 1, "showTitle": True, "className": "", "visible": "true", "disabled": "false"},
        {"id": "dashchart00001", "type": "ui-chart", "z": z, "group": "dashgroup00001", "name": "latency",
         "label": "latency", "order": 1, "chartType": "line", "category": "topic", "categoryType": "msg",
         "xAxisType": "time", "yAxisProperty": "payload", "xAxisProperty": "", "removeOlder": 1,
         "removeOlderUnit": "3600", "removeOlderPoints": "", "width": 6, "height": 4, "wires": [[]]},
        {"id": "dashinject0001", "type": "inject", "z": z, "repeat": "", "once": True, "onceDelay": 0.1,
         "topic": "latency", "payload": "42", "payloadType": "num",
         "props": [{"p": "payload"}, {"p": "topic", "vt": "str"}], "wires": [["dashchart00001"]]},
    ]
