"""Drives `riposte server` with Hera, the Python SDK for Argo Workflows, unmodified.

Creates a WorkflowTemplate, submits it with parameters, waits for Succeeded and reads the
outputs. Usage: python3 tests/hera/e2e.py http://127.0.0.1:2746
"""

import sys

from hera.shared import global_config
from hera.workflows import Container, Parameter, WorkflowTemplate, WorkflowsService
from hera.workflows.models import WorkflowSubmitRequest, SubmitOpts

host = sys.argv[1]
global_config.host = host
global_config.verify_ssl = False
service = WorkflowsService(host=host, verify_ssl=False)

with WorkflowTemplate(
    name="hera-isolate",
    namespace="default",
    entrypoint="isolate",
    arguments=[Parameter(name="pod", value="none")],
    workflows_service=service,
) as wt:
    Container(
        name="isolate",
        image="busybox",
        inputs=[Parameter(name="pod")],
        command=["sh", "-c"],
        args=["echo -n quarantined-{{inputs.parameters.pod}} | tee /tmp/out"],
        outputs=[Parameter(name="label", value_from={"path": "/tmp/out"})],
    )

created = wt.create()
assert created.metadata.name == "hera-isolate", created

wf = service.submit_workflow(
    WorkflowSubmitRequest(
        namespace="default",
        resource_kind="WorkflowTemplate",
        resource_name="hera-isolate",
        submit_options=SubmitOpts(parameters=["pod=web-7d4b9"]),
    ),
    namespace="default",
)
name = wf.metadata.name
import time

deadline = time.time() + 60
while True:
    wf = service.get_workflow(name=name, namespace="default")
    phase = wf.status.phase if wf.status else None
    if phase in ("Succeeded", "Failed", "Error"):
        break
    assert time.time() < deadline, f"timed out, phase {phase}"
    time.sleep(0.2)

assert phase == "Succeeded", wf.status
root = wf.status.nodes[name]
params = {p.name: p.value for p in root.outputs.parameters}
assert params == {"label": "quarantined-web-7d4b9"}, params
listed = service.list_workflows(namespace="default")
assert any(i.metadata.name == name for i in listed.items)
print(f"hera e2e ok: {name} {phase} {params}")
