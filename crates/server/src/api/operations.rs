//! The API's operations table (method, path, Argo operation id, summary): the OpenAPI
//! document is generated from it and tests check it against the router.

#[allow(unused_imports)]
use super::*;

/// Every operation: method, path, operation id, summary. The OpenAPI document is built from
/// this table and a test checks that the router serves exactly these.
pub const OPERATIONS: &[(&str, &str, &str, &str)] = &[
    (
        "get",
        "/api/v1/version",
        "InfoService_GetVersion",
        "Server version",
    ),
    (
        "get",
        "/api/v1/info",
        "InfoService_GetInfo",
        "Server information",
    ),
    (
        "get",
        "/api/v1/userinfo",
        "InfoService_GetUserInfo",
        "The caller's identity",
    ),
    ("get", "/api/v1/openapi.json", "OpenAPI", "This document"),
    (
        "post",
        "/api/v1/workflows/{namespace}",
        "WorkflowService_CreateWorkflow",
        "Create and start a workflow ({workflow})",
    ),
    (
        "get",
        "/api/v1/workflows/{namespace}",
        "WorkflowService_ListWorkflows",
        "List workflows (listOptions.labelSelector, listOptions.limit, listOptions.continue, phase, createdAfter, createdBefore)",
    ),
    (
        "post",
        "/api/v1/workflows/{namespace}/lint",
        "WorkflowService_LintWorkflow",
        "Lint a workflow ({workflow})",
    ),
    (
        "post",
        "/api/v1/workflows/{namespace}/submit",
        "WorkflowService_SubmitWorkflow",
        "Submit a workflow from a (Cluster)WorkflowTemplate ({resourceKind, resourceName, submitOptions})",
    ),
    (
        "get",
        "/api/v1/workflows/{namespace}/{name}",
        "WorkflowService_GetWorkflow",
        "A workflow with status.nodes",
    ),
    (
        "delete",
        "/api/v1/workflows/{namespace}/{name}",
        "WorkflowService_DeleteWorkflow",
        "Delete a finished workflow",
    ),
    (
        "put",
        "/api/v1/workflows/{namespace}/{name}/resume",
        "WorkflowService_ResumeWorkflow",
        "Resume suspended nodes ({nodeFieldSelector})",
    ),
    (
        "put",
        "/api/v1/workflows/{namespace}/{name}/set",
        "WorkflowService_SetWorkflow",
        "Supply a suspended node's outputs and resume it ({nodeFieldSelector, outputParameters})",
    ),
    (
        "put",
        "/api/v1/workflows/{namespace}/{name}/stop",
        "WorkflowService_StopWorkflow",
        "Stop: fail running steps, run exit handlers",
    ),
    (
        "put",
        "/api/v1/workflows/{namespace}/{name}/terminate",
        "WorkflowService_TerminateWorkflow",
        "Terminate: fail running steps, no exit handlers",
    ),
    (
        "put",
        "/api/v1/workflows/{namespace}/{name}/retry",
        "WorkflowService_RetryWorkflow",
        "Run failed nodes again ({restartSuccessful, nodeFieldSelector, parameters})",
    ),
    (
        "put",
        "/api/v1/archived-workflows/{uid}/retry",
        "ArchivedWorkflowService_RetryArchivedWorkflow",
        "Retry a finished workflow by uid",
    ),
    (
        "put",
        "/api/v1/archived-workflows/{uid}/resubmit",
        "ArchivedWorkflowService_ResubmitArchivedWorkflow",
        "Resubmit a finished workflow by uid",
    ),
    (
        "put",
        "/api/v1/workflows/{namespace}/{name}/suspend",
        "WorkflowService_SuspendWorkflow",
        "Suspend the workflow: nothing new starts until resume",
    ),
    (
        "post",
        "/api/v1/workflow-templates/{namespace}/lint",
        "WorkflowTemplateService_LintWorkflowTemplate",
        "Lint a WorkflowTemplate ({template})",
    ),
    (
        "post",
        "/api/v1/cluster-workflow-templates/lint",
        "ClusterWorkflowTemplateService_LintClusterWorkflowTemplate",
        "Lint a ClusterWorkflowTemplate ({template})",
    ),
    (
        "post",
        "/api/v1/cron-workflows/{namespace}/lint",
        "CronWorkflowService_LintCronWorkflow",
        "Lint a CronWorkflow ({cronWorkflow})",
    ),
    (
        "put",
        "/api/v1/workflows/{namespace}/{name}/resubmit",
        "WorkflowService_ResubmitWorkflow",
        "A new workflow from the same spec and parameters",
    ),
    (
        "get",
        "/api/v1/workflows/{namespace}/{name}/log",
        "WorkflowService_WorkflowLogs",
        "Node logs as NDJSON (podName; logOptions.follow=true streams until the workflow ends)",
    ),
    (
        "get",
        "/api/v1/workflow-events/{namespace}",
        "WorkflowService_WatchWorkflows",
        "NDJSON stream of workflow changes (listOptions.fieldSelector=metadata.name=NAME)",
    ),
    (
        "post",
        "/api/v1/workflow-templates/{namespace}",
        "WorkflowTemplateService_CreateWorkflowTemplate",
        "Create a WorkflowTemplate ({template})",
    ),
    (
        "get",
        "/api/v1/workflow-templates/{namespace}",
        "WorkflowTemplateService_ListWorkflowTemplates",
        "List WorkflowTemplates",
    ),
    (
        "get",
        "/api/v1/workflow-templates/{namespace}/{name}",
        "WorkflowTemplateService_GetWorkflowTemplate",
        "A WorkflowTemplate",
    ),
    (
        "put",
        "/api/v1/workflow-templates/{namespace}/{name}",
        "WorkflowTemplateService_UpdateWorkflowTemplate",
        "Replace a WorkflowTemplate ({template})",
    ),
    (
        "delete",
        "/api/v1/workflow-templates/{namespace}/{name}",
        "WorkflowTemplateService_DeleteWorkflowTemplate",
        "Delete a WorkflowTemplate",
    ),
    (
        "post",
        "/api/v1/cluster-workflow-templates",
        "ClusterWorkflowTemplateService_CreateClusterWorkflowTemplate",
        "Create a ClusterWorkflowTemplate ({template})",
    ),
    (
        "get",
        "/api/v1/cluster-workflow-templates",
        "ClusterWorkflowTemplateService_ListClusterWorkflowTemplates",
        "List ClusterWorkflowTemplates",
    ),
    (
        "get",
        "/api/v1/cluster-workflow-templates/{name}",
        "ClusterWorkflowTemplateService_GetClusterWorkflowTemplate",
        "A ClusterWorkflowTemplate",
    ),
    (
        "put",
        "/api/v1/cluster-workflow-templates/{name}",
        "ClusterWorkflowTemplateService_UpdateClusterWorkflowTemplate",
        "Replace a ClusterWorkflowTemplate ({template})",
    ),
    (
        "delete",
        "/api/v1/cluster-workflow-templates/{name}",
        "ClusterWorkflowTemplateService_DeleteClusterWorkflowTemplate",
        "Delete a ClusterWorkflowTemplate",
    ),
    (
        "post",
        "/api/v1/cron-workflows/{namespace}",
        "CronWorkflowService_CreateCronWorkflow",
        "Create a CronWorkflow ({cronWorkflow})",
    ),
    (
        "get",
        "/api/v1/cron-workflows/{namespace}",
        "CronWorkflowService_ListCronWorkflows",
        "List CronWorkflows",
    ),
    (
        "get",
        "/api/v1/cron-workflows/{namespace}/{name}",
        "CronWorkflowService_GetCronWorkflow",
        "A CronWorkflow with its last scheduled time",
    ),
    (
        "put",
        "/api/v1/cron-workflows/{namespace}/{name}",
        "CronWorkflowService_UpdateCronWorkflow",
        "Replace a CronWorkflow ({cronWorkflow})",
    ),
    (
        "delete",
        "/api/v1/cron-workflows/{namespace}/{name}",
        "CronWorkflowService_DeleteCronWorkflow",
        "Delete a CronWorkflow",
    ),
    (
        "put",
        "/api/v1/cron-workflows/{namespace}/{name}/suspend",
        "CronWorkflowService_SuspendCronWorkflow",
        "Stop scheduling",
    ),
    (
        "put",
        "/api/v1/cron-workflows/{namespace}/{name}/resume",
        "CronWorkflowService_ResumeCronWorkflow",
        "Resume scheduling",
    ),
    (
        "get",
        "/api/v1/archived-workflows",
        "ArchivedWorkflowService_ListArchivedWorkflows",
        "Finished workflows (namespace, listOptions.limit)",
    ),
    (
        "get",
        "/api/v1/archived-workflows/{uid}",
        "ArchivedWorkflowService_GetArchivedWorkflow",
        "A finished workflow by uid",
    ),
    (
        "delete",
        "/api/v1/archived-workflows/{uid}",
        "ArchivedWorkflowService_DeleteArchivedWorkflow",
        "Delete a finished workflow by uid",
    ),
    (
        "post",
        "/api/v1/riposte/callbacks/{uid}/{nodeId}",
        "Riposte_NodeCallback",
        "A step's wrapper (`riposte exec`) reports its result; bearer: that node's token, not a user token",
    ),
    (
        "post",
        "/api/v1/riposte/callbacks/{uid}/{nodeId}/approval-links",
        "Riposte_StepApprovalLinks",
        "A step mints signed approval links for a suspended node of its own workflow ({node, decisions, ttl, to}); bearer: that node's token",
    ),
    (
        "post",
        "/api/v1/workflows/{namespace}/{name}/approval-links",
        "Riposte_ApprovalLinks",
        "Signed approval links for a suspended node ({node, decisions: [{label, parameters}], ttl, to}); needs approver",
    ),
    (
        "get",
        "/api/v1/riposte/approvals/{token}",
        "Riposte_ShowApproval",
        "The page an approval link opens: what it decides, and a confirm button (GET never decides)",
    ),
    (
        "post",
        "/api/v1/riposte/approvals/{token}",
        "Riposte_DecideApproval",
        "Decide a suspended node with an approval link (no token: the signed link is the authority; audited)",
    ),
    (
        "post",
        "/api/v1/sensors/{namespace}",
        "SensorService_CreateSensor",
        "Create a Sensor ({sensor}); it is armed at once",
    ),
    (
        "get",
        "/api/v1/sensors/{namespace}",
        "SensorService_ListSensors",
        "List Sensors",
    ),
    (
        "get",
        "/api/v1/sensors/{namespace}/{name}",
        "SensorService_GetSensor",
        "A Sensor",
    ),
    (
        "put",
        "/api/v1/sensors/{namespace}/{name}",
        "SensorService_UpdateSensor",
        "Replace a Sensor ({name, sensor}); its waiting partial matches are cleared",
    ),
    (
        "delete",
        "/api/v1/sensors/{namespace}/{name}",
        "SensorService_DeleteSensor",
        "Delete a Sensor",
    ),
    (
        "post",
        "/api/v1/event-sources/{namespace}",
        "EventSourceService_CreateEventSource",
        "Create an EventSource ({eventSource}); its receivers start at once",
    ),
    (
        "get",
        "/api/v1/event-sources/{namespace}",
        "EventSourceService_ListEventSources",
        "List EventSources",
    ),
    (
        "get",
        "/api/v1/event-sources/{namespace}/{name}",
        "EventSourceService_GetEventSource",
        "An EventSource",
    ),
    (
        "put",
        "/api/v1/event-sources/{namespace}/{name}",
        "EventSourceService_UpdateEventSource",
        "Replace an EventSource ({name, eventSource}); its receivers restart",
    ),
    (
        "delete",
        "/api/v1/event-sources/{namespace}/{name}",
        "EventSourceService_DeleteEventSource",
        "Delete an EventSource",
    ),
    (
        "post",
        "/api/v1/workflow-event-bindings/{namespace}",
        "Riposte_CreateWorkflowEventBinding",
        "Create a WorkflowEventBinding ({workflowEventBinding})",
    ),
    (
        "get",
        "/api/v1/workflow-event-bindings/{namespace}",
        "Riposte_ListWorkflowEventBindings",
        "List WorkflowEventBindings",
    ),
    (
        "get",
        "/api/v1/workflow-event-bindings/{namespace}/{name}",
        "Riposte_GetWorkflowEventBinding",
        "A WorkflowEventBinding",
    ),
    (
        "put",
        "/api/v1/workflow-event-bindings/{namespace}/{name}",
        "Riposte_UpdateWorkflowEventBinding",
        "Replace a WorkflowEventBinding ({name, workflowEventBinding})",
    ),
    (
        "delete",
        "/api/v1/workflow-event-bindings/{namespace}/{name}",
        "Riposte_DeleteWorkflowEventBinding",
        "Delete a WorkflowEventBinding",
    ),
    (
        "post",
        "/api/v1/events/{namespace}/{discriminator}",
        "EventService_ReceiveEvent",
        "Receive an event: every WorkflowEventBinding whose selector holds submits its template",
    ),
    (
        "post",
        "/api/v1/webhooks/{namespace}/{eventSource}/{eventName}",
        "Riposte_ReceiveWebhook",
        "A webhook EventSource's endpoint (any method; the event source's method is checked). CloudEvents, Falco, Tracee and Kubernetes audit batches are recognised; 200 only after the event is stored",
    ),
    (
        "get",
        "/api/v1/riposte/library",
        "Riposte_ListLibrary",
        "The response library shipped in this build: each ClusterWorkflowTemplate (an action) and playbook object, with its file and description",
    ),
    (
        "post",
        "/api/v1/riposte/library/{namespace}",
        "Riposte_InstallLibrary",
        "Install the library's ClusterWorkflowTemplates and, with {\"playbooks\": true}, the playbooks' WorkflowTemplates, Sensors and EventSources into the namespace (created or updated; linted and audited like single creates)",
    ),
    (
        "get",
        "/api/v1/riposte/events",
        "Riposte_ListEvents",
        "Stored events, newest first (namespace, eventSource, before, limit)",
    ),
    (
        "get",
        "/api/v1/riposte/events/{seq}",
        "Riposte_GetEvent",
        "An event's envelope and every sensor's decision about it (dependencies with reasons, firings, workflows)",
    ),
    (
        "post",
        "/api/v1/riposte/events/{seq}/redeliver",
        "Riposte_RedeliverEvent",
        "Hand a stored event to the sensors again (idempotent: earlier firings are not repeated)",
    ),
    (
        "get",
        "/api/v1/riposte/audit",
        "RiposteService_ListAudit",
        "The audit log, newest first (object, workflow=<ns>/<name>, actor, since, until, before, limit)",
    ),
    (
        "get",
        "/api/v1/riposte/audit/verify",
        "RiposteService_VerifyAudit",
        "Recompute the audit hash chain: rows, ok, problems",
    ),
    (
        "get",
        "/api/v1/riposte/approvals",
        "RiposteService_ListApprovals",
        "Suspended nodes waiting for a person, across running workflows (namespace)",
    ),
    (
        "post",
        "/api/v1/riposte/lint",
        "RiposteService_Lint",
        "Lint a YAML text or an object rendered as YAML ({yaml} or {object}): diagnostics with line and column",
    ),
    (
        "post",
        "/api/v1/sensors/{namespace}/{name}/test",
        "RiposteService_TestSensor",
        "Dry-run a sensor against a stored event or a payload ({event: seq} or {data}); nothing is submitted",
    ),
    (
        "get",
        "/api/v1/workflows/",
        "WorkflowService_ListWorkflows_AllNamespaces",
        "List workflows in every namespace (needs a role for \"*\"; same query as the namespaced list)",
    ),
    (
        "get",
        "/api/v1/workflow-events/",
        "WorkflowService_WatchWorkflows_AllNamespaces",
        "Watch workflows in every namespace (NDJSON, or server-sent events)",
    ),
];

/// The OpenAPI 3 document of [`OPERATIONS`].
pub fn openapi() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, id, summary) in OPERATIONS {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "operationId": id,
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                "default": {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            },
        });
        if matches!(*method, "post" | "put") {
            op["requestBody"] =
                json!({"content": {"application/json": {"schema": {"type": "object"}}}});
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Riposte API (Argo Server-compatible)", "version": env!("CARGO_PKG_VERSION")},
        "paths": Value::Object(paths),
        "components": {
            "schemas": {"Error": {"type": "object", "properties": {"code": {"type": "integer", "description": "gRPC status code"}, "message": {"type": "string"}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"bearer": []}],
    })
}

pub(super) async fn openapi_doc() -> Json<Value> {
    Json(openapi())
}
