"""Drives `riposte server`'s events API with Hera's EventsService, unmodified: creates,
gets, lists, updates and deletes an EventSource and a Sensor, then posts an alert to the
event source's webhook and sees the sensor's workflow; and Argo Workflows' own event path
(`receive_event`) with a WorkflowEventBinding.

Usage: python3 tests/hera/events.py http://127.0.0.1:2746
"""

import base64
import json
import sys
import time
import urllib.request

from hera.events.service import EventsService
from hera.events.models import (
    CreateEventSourceRequest,
    CreateSensorRequest,
    UpdateEventSourceRequest,
    UpdateSensorRequest,
    Item,
)
from hera.workflows import WorkflowsService


host = sys.argv[1]
# A free port for the event source's own listener.
with __import__("socket").socket() as _s:
    _s.bind(("127.0.0.1", 0))
    PORT = str(_s.getsockname()[1])
events = EventsService(host=host, verify_ssl=False, namespace="default")
workflows = WorkflowsService(host=host, verify_ssl=False, namespace="default")


def post(path, body):
    req = urllib.request.Request(
        host + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"{}")


post(
    "/api/v1/workflow-templates/default",
    {
        "template": {
            "metadata": {"name": "hera-respond"},
            "spec": {
                "entrypoint": "main",
                "arguments": {"parameters": [{"name": "pod", "value": "none"}]},
                "templates": [{"name": "main", "script": {"image": "alpine", "command": ["sh"], "source": "echo {{workflow.parameters.pod}}"}}],
            },
        }
    },
)

es = events.create_event_source(
    CreateEventSourceRequest.parse_obj(
        {
            "namespace": "default",
            "eventSource": {
                "metadata": {"name": "hera-hooks"},
                "spec": {"webhook": {"alerts": {"webhookContext": {"port": PORT, "endpoint": "/alerts", "method": "POST"}}}},
            },
        }
    )
)
assert es.metadata.name == "hera-hooks", es
got = events.get_event_source("hera-hooks")
assert got.spec.webhook["alerts"].webhook_context.endpoint == "/alerts", got
updated = events.update_event_source(
    "hera-hooks",
    UpdateEventSourceRequest.parse_obj(
        {
            "namespace": "default",
            "name": "hera-hooks",
            "eventSource": {
                "metadata": {"name": "hera-hooks"},
                "spec": {
                    "webhook": {
                        "alerts": {"webhookContext": {"port": PORT, "endpoint": "/alerts", "method": "POST"}},
                        "other": {"webhookContext": {"port": PORT, "endpoint": "/other", "method": "POST"}},
                    }
                },
            },
        }
    ),
)
assert "other" in updated.spec.webhook, updated
assert [e.metadata.name for e in events.list_event_sources().items] == ["hera-hooks"]

workflow = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Workflow",
    "metadata": {"generateName": "hera-respond-"},
    "spec": {"workflowTemplateRef": {"name": "hera-respond"}, "arguments": {"parameters": [{"name": "pod", "value": "x"}]}},
}
# Hera's model carries a trigger's object as base64 (K8SResource.value).
encoded = base64.b64encode(json.dumps(workflow).encode()).decode()
sensor_body = {
    "metadata": {"name": "hera-sensor"},
    "spec": {
        "dependencies": [
            {
                "name": "alert",
                "eventSourceName": "hera-hooks",
                "eventName": "alerts",
                "filters": {"data": [{"path": "body.severity", "type": "string", "value": ["critical"]}]},
            }
        ],
        "triggers": [
            {
                "template": {
                    "name": "respond",
                    "argoWorkflow": {
                        "operation": "submit",
                        "source": {"resource": {"value": encoded}},
                        "parameters": [{"src": {"dependencyName": "alert", "dataKey": "body.pod"}, "dest": "spec.arguments.parameters.0.value"}],
                    },
                }
            }
        ],
    },
}
s = events.create_sensor(CreateSensorRequest.parse_obj({"namespace": "default", "sensor": sensor_body}))
assert s.metadata.name == "hera-sensor", s
assert events.get_sensor("hera-sensor").spec.dependencies[0].event_source_name == "hera-hooks"
events.update_sensor("hera-sensor", UpdateSensorRequest.parse_obj({"namespace": "default", "name": "hera-sensor", "sensor": sensor_body}))
assert [x.metadata.name for x in events.list_sensors().items] == ["hera-sensor"]

# An alert through the webhook on the API port: the sensor's workflow appears.
post("/api/v1/webhooks/default/hera-hooks/alerts", {"severity": "critical", "pod": "web-7"})
deadline = time.time() + 30
while True:
    wfs = workflows.list_workflows(namespace="default").items or []
    made = [w for w in wfs if (w.metadata.labels or {}).get("events.argoproj.io/sensor") == "hera-sensor"]
    if made:
        break
    assert time.time() < deadline, "the sensor made no workflow"
    time.sleep(0.2)
params = made[0].spec.arguments.parameters if made[0].spec and made[0].spec.arguments else None

# Argo Workflows' event endpoint with a WorkflowEventBinding.
post(
    "/api/v1/workflow-event-bindings/default",
    {
        "workflowEventBinding": {
            "metadata": {"name": "hera-binding"},
            "spec": {
                "event": {"selector": "payload.kind == 'scan' && discriminator == 'trivy'"},
                "submit": {"workflowTemplateRef": {"name": "hera-respond"}, "arguments": {"parameters": [{"name": "pod", "valueFrom": {"event": "payload.pod"}}]}},
            },
        }
    },
)
events.receive_event("trivy", Item.parse_obj({"kind": "scan", "pod": "db-0"}), namespace="default")
bound = [
    w
    for w in workflows.list_workflows(namespace="default").items or []
    if (w.metadata.labels or {}).get("workflows.argoproj.io/workflow-event-binding") == "hera-binding"
]
assert len(bound) == 1, bound

events.delete_sensor("hera-sensor")
events.delete_event_source("hera-hooks")
assert not (events.list_sensors().items or [])
assert not (events.list_event_sources().items or [])
print("hera events ok")
