//! The OpenAPI 3.1 document of `comfyd serve`, generated from the loaded workflows: one
//! `POST /v1/workflows/NAME/runs` path per workflow, its request body that workflow's input
//! schema (JSON Schema 2020-12, which OpenAPI 3.1 takes as it is).

use serde_json::{Map, Value, json};

/// What the document needs of a workflow.
pub struct Entry<'a> {
    pub name: &'a str,
    pub title: Option<&'a str>,
    pub description: Option<&'a str>,
    /// The input schema as `comfyc` emits it.
    pub schema: &'a Value,
    /// Names of its file inputs (multipart parts).
    pub files: Vec<&'a str>,
    /// Those of them that are required.
    pub required_files: Vec<&'a str>,
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn run_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Run"}}}
    })
}

/// The input schema as embedded: without `$schema` and `$id` (the document is the dialect;
/// an `$id` would change how references inside resolve).
fn embedded(schema: &Value) -> Value {
    let mut s = schema.clone();
    if let Some(m) = s.as_object_mut() {
        m.remove("$schema");
        m.remove("$id");
    }
    s
}

/// The whole document. `secured`: bearer tokens are configured.
pub fn document(workflows: &[Entry<'_>], secured: bool) -> Value {
    let mut paths = Map::new();
    let names: Vec<&str> = workflows.iter().map(|w| w.name).collect();
    paths.insert(
        "/v1/workflows".into(),
        json!({"get": {
            "operationId": "listWorkflows",
            "summary": "The workflows this server runs",
            "responses": {
                "200": {"description": "The index", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WorkflowIndex"}}}},
                "401": error_response("No valid token"),
                "403": error_response("The token lacks the `read` scope"),
            }
        }}),
    );
    paths.insert(
        "/v1/workflows/{name}".into(),
        json!({"get": {
            "operationId": "getWorkflow",
            "summary": "A workflow: its input schema and its RJSF UI schema",
            "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}, "examples": {"known": {"value": names.first().copied().unwrap_or("txt2img")}}}],
            "responses": {
                "200": {"description": "The workflow", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Workflow"}}}},
                "401": error_response("No valid token"),
                "403": error_response("The token lacks the `read` scope"),
                "404": error_response("No such workflow"),
            }
        }}),
    );
    for w in workflows {
        let inputs = embedded(w.schema);
        let webhook = json!({"type": "string", "format": "uri", "pattern": "^https?://[^/?#@\\s]+", "description": "POSTed the finished run (Standard Webhooks signature); needs the server's webhook secret"});
        let json_body = json!({
            "type": "object",
            "properties": {
                "inputs": inputs,
                "webhook": webhook,
            },
            "required": ["inputs"],
            "additionalProperties": false,
        });
        let mut parts = Map::new();
        let mut encoding = Map::new();
        let mut required = vec![json!("inputs")];
        let mut multipart_inputs = inputs.clone();
        for f in &w.files {
            // Sent as a part of their own, so the `inputs` part need not have them.
            if let Some(r) = multipart_inputs
                .get_mut("required")
                .and_then(Value::as_array_mut)
            {
                r.retain(|n| n != *f);
            }
            if let Some(p) = multipart_inputs
                .get_mut("properties")
                .and_then(Value::as_object_mut)
            {
                p.remove(*f);
            }
        }
        parts.insert("inputs".into(), multipart_inputs);
        encoding.insert("inputs".into(), json!({"contentType": "application/json"}));
        parts.insert("webhook".into(), webhook.clone());
        for f in &w.files {
            parts.insert(
                (*f).to_owned(),
                // No `type`: any bytes are a file, and a multipart part cannot be of another type.
                json!({"contentMediaType": "application/octet-stream", "description": "The file; stored content-addressed under the inputs root"}),
            );
            encoding.insert(
                (*f).to_owned(),
                json!({"contentType": "application/octet-stream"}),
            );
            if w.required_files.contains(f) {
                required.push(json!(f));
            }
        }
        let mut op = json!({
            "operationId": format!("run_{}", w.name.replace(['-', '.'], "_")),
            "summary": format!("Run {}", w.title.unwrap_or(w.name)),
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "minLength": 1, "maxLength": 255}}],
            "requestBody": {
                "required": true,
                "content": {
                    "application/json": {"schema": json_body},
                    "multipart/form-data": {
                        "schema": {"type": "object", "properties": parts, "required": required, "additionalProperties": false},
                        "encoding": encoding,
                    },
                }
            },
            "responses": {
                "202": {"description": "Queued", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Run"}}}},
                "200": run_response("The run this idempotency key made before"),
                "400": error_response("The body is not JSON, or not an object"),
                "401": error_response("No valid token"),
                "403": error_response("The token lacks the `submit` scope"),
                "409": error_response("The idempotency key was used with another body"),
                "413": error_response("The body is larger than the server takes"),
                "415": error_response("Neither JSON nor multipart"),
                "422": error_response("Inputs the workflow refuses: one detail per input"),
            }
        });
        if let Some(d) = w.description {
            op["description"] = json!(d);
        }
        paths.insert(
            format!("/v1/workflows/{}/runs", w.name),
            json!({ "post": op }),
        );
    }
    let id_param =
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    paths.insert(
        "/v1/runs".into(),
        json!({"get": {
            "operationId": "listRuns",
            "summary": "Runs, newest first",
            "parameters": [
                {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
                {"name": "cursor", "in": "query", "required": false, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {"description": "A page of runs", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RunList"}}}},
                "400": error_response("A bad `limit` or `cursor`"),
                "401": error_response("No valid token"),
                "403": error_response("The token lacks the `read` scope"),
            }
        }}),
    );
    paths.insert(
        "/v1/runs/{id}".into(),
        json!({
            "get": {
                "operationId": "getRun",
                "summary": "A run: queued (position), running (progress), done (outputs), failed (error)",
                "parameters": [id_param],
                "responses": {
                    "200": run_response("The run"),
                    "401": error_response("No valid token"),
                    "403": error_response("The token lacks the `read` scope"),
                    "404": error_response("No such run"),
                }
            },
            "delete": {
                "operationId": "cancelRun",
                "summary": "Cancel a run: a queued one never runs, a running one is interrupted",
                "parameters": [id_param],
                "responses": {
                    "200": run_response("The run (a final one is left as it is)"),
                    "401": error_response("No valid token"),
                    "403": error_response("The token lacks the `cancel` scope"),
                    "404": error_response("No such run"),
                }
            }
        }),
    );
    paths.insert(
        "/v1/runs/{id}/events".into(),
        json!({"get": {
            "operationId": "runEvents",
            "summary": "Server-sent events: `status`, the run, at each change; ends after a final state",
            "parameters": [id_param],
            "responses": {
                "200": {"description": "The event stream", "content": {"text/event-stream": {"schema": {
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {"const": "status"},
                        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {"$ref": "#/components/schemas/Run"}},
                    }
                }}}},
                "401": error_response("No valid token"),
                "403": error_response("The token lacks the `read` scope"),
                "404": error_response("No such run"),
            }
        }}),
    );
    paths.insert(
        "/v1/runs/{id}/outputs/{file}".into(),
        json!({"get": {
            "operationId": "getOutput",
            "summary": "An output file (single `Range` requests supported)",
            "parameters": [id_param, {"name": "file", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "Range", "in": "header", "required": false, "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "The file", "content": {"*/*": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}},
                "206": {"description": "Part of the file", "content": {"*/*": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}},
                "401": error_response("No valid token"),
                "403": error_response("The token lacks the `read` scope"),
                "404": error_response("No such run or file"),
                "416": error_response("The range is outside the file"),
            }
        }}),
    );
    let run = json!({
        "type": "object",
        "required": ["id", "workflow", "status", "url", "created"],
        "properties": {
            "id": {"type": "string"},
            "workflow": {"type": "string"},
            "status": {"enum": ["queued", "running", "done", "failed", "cancelled"]},
            "url": {"type": "string"},
            "created": {"type": "integer", "description": "ms since the Unix epoch"},
            "started": {"type": "integer"},
            "ended": {"type": "integer"},
            "position": {"type": "integer", "minimum": 0, "description": "job files ahead (queued)"},
            "phase": {"type": "string"},
            "progress": {"type": "object", "properties": {
                "node": {"type": ["string", "null"]}, "class": {"type": ["string", "null"]},
                "value": {"type": "number"}, "max": {"type": "number"},
                "nodes_done": {"type": "integer"}, "nodes_total": {"type": "integer"}}},
            "outputs": {"type": "array", "items": {"type": "object",
                "required": ["url", "file", "kind", "media_type", "size", "sha256"],
                "properties": {"url": {"type": "string"}, "file": {"type": "string"}, "kind": {"type": "string"},
                    "node": {"type": "string"}, "media_type": {"type": "string"}, "size": {"type": "integer"},
                    "sha256": {"type": "string"}, "width": {"type": ["integer", "null"]}, "height": {"type": ["integer", "null"]}}}},
            "error": {"type": "object", "required": ["kind", "message"], "properties": {
                "kind": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "array"}}},
            "inputs": {"type": "object"},
            "data": {"type": "array"},
            "cancel_requested": {"type": "boolean"},
        }
    });
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "comfyd serve",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Runs of typed ComfyUI workflows, over comfyd's job directory.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {"schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"},
                    "details": {"type": "array", "items": {"type": "object"}}}}}
            },
            "Run": run,
            "RunList": {"type": "object", "required": ["runs", "next"], "properties": {
                "runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}},
                "next": {"type": ["string", "null"]}}},
            "WorkflowSummary": {"type": "object", "required": ["name", "title", "version"], "properties": {
                "name": {"type": "string"}, "title": {"type": "string"},
                "description": {"type": ["string", "null"]}, "version": {"type": ["string", "null"]}}},
            "WorkflowIndex": {"type": "object", "required": ["workflows"], "properties": {
                "workflows": {"type": "array", "items": {"$ref": "#/components/schemas/WorkflowSummary"}}}},
            "Workflow": {"type": "object", "required": ["name", "title", "version", "schema", "uischema"], "properties": {
                "name": {"type": "string"}, "title": {"type": "string"},
                "description": {"type": ["string", "null"]}, "version": {"type": ["string", "null"]},
                "schema": {"type": "object"}, "uischema": {"type": "object"}}},
        }},
    });
    if secured {
        doc["components"]["securitySchemes"] =
            json!({"bearer": {"type": "http", "scheme": "bearer"}});
        doc["security"] = json!([{"bearer": []}]);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_literal_path_per_workflow_with_its_schema() {
        let schema = json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "urn:x",
            "type": "object", "properties": {"prompt": {"type": "string"}, "image": {"type": "string"}}});
        let doc = document(
            &[Entry {
                name: "img2img",
                title: Some("Image to image"),
                description: None,
                schema: &schema,
                files: vec!["image"],
                required_files: vec!["image"],
            }],
            true,
        );
        assert_eq!(doc["openapi"], "3.1.0");
        let op = &doc["paths"]["/v1/workflows/img2img/runs"]["post"];
        let body = &op["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(
            body["properties"]["inputs"]["properties"]["prompt"]["type"],
            "string"
        );
        assert!(body["properties"]["inputs"].get("$id").is_none());
        assert!(
            op["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["image"]
                .is_object()
        );
        assert!(doc["paths"].get("/v1/workflows/{name}/runs").is_none());
        assert_eq!(doc["security"][0]["bearer"], json!([]));
        assert!(document(&[], false).get("security").is_none());
    }
}
