//! triage as an MCP client of any server reached by URL: `triage agents
//! probe URL` (handshake, list, call) and the gateway bench.
//!
//! The client speaks protocol 2025-11-25, follows the server's SSE `retry`
//! advice and resumes broken streams with `Last-Event-ID` (rmcp's
//! transport), sends a bearer token when given one, and answers a server's
//! form elicitation with the defaults its schema offers: it accepts when
//! every required field has a default, and declines otherwise, since
//! nobody is there to type the rest.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use rmcp::model::{
    ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction,
    ElicitationCapability, FormElicitationCapability, Implementation, JsonObject, ProgressNotificationParam,
    ProtocolVersion, ResourceUpdatedNotificationParam,
};
use rmcp::service::{NotificationContext, RequestContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ErrorData as McpError, RoleClient, ServiceExt as _};
use serde_json::{Map, Value, json};

/// The protocol revision the client asks for.
pub const PROTOCOL: ProtocolVersion = ProtocolVersion::V_2025_11_25;

/// The client side: counts progress notifications, resource changes, log
/// messages and elicitations, and answers elicitations with defaults.
#[derive(Debug, Clone, Default)]
pub struct ProbeClient {
    pub progress: Arc<AtomicUsize>,
    pub elicitations: Arc<AtomicUsize>,
    /// `notifications/resources/list_changed` received.
    pub resource_changes: Arc<AtomicUsize>,
    /// `notifications/resources/updated` received.
    pub resource_updates: Arc<AtomicUsize>,
    /// `notifications/message` (log messages) received.
    pub log_messages: Arc<AtomicUsize>,
}

impl ClientHandler for ProbeClient {
    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        caps.elicitation = Some(ElicitationCapability::new().with_form(FormElicitationCapability::default()));
        ClientConfig::new(
            caps,
            Implementation::new("triage-probe", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(PROTOCOL)
    }

    async fn on_progress(
        &self,
        _params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.resource_changes.fetch_add(1, Ordering::Relaxed);
    }

    async fn on_resource_updated(
        &self,
        _params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.resource_updates.fetch_add(1, Ordering::Relaxed);
    }

    // Logging is part of 2025-11-25; rmcp marks it deprecated for the
    // revision after.
    #[allow(deprecated)]
    async fn on_logging_message(
        &self,
        _params: rmcp::model::LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.log_messages.fetch_add(1, Ordering::Relaxed);
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, McpError> {
        self.elicitations.fetch_add(1, Ordering::Relaxed);
        let ElicitRequestParams::FormElicitationParams { requested_schema, .. } = request else {
            return Ok(ElicitResult::new(ElicitationAction::Decline));
        };
        let schema = serde_json::to_value(&requested_schema).unwrap_or(Value::Null);
        match schema_defaults(&schema) {
            Some(content) => {
                Ok(ElicitResult::new(ElicitationAction::Accept).with_content(Value::Object(content)))
            }
            None => Ok(ElicitResult::new(ElicitationAction::Decline)),
        }
    }
}

/// The `default` of every property of an object schema, or `None` when a
/// required property has none.
pub fn schema_defaults(schema: &Value) -> Option<Map<String, Value>> {
    let props = schema.get("properties").and_then(Value::as_object);
    let mut out = Map::new();
    for (name, prop) in props.into_iter().flatten() {
        if let Some(d) = prop.get("default") {
            out.insert(name.clone(), d.clone());
        }
    }
    let required = schema.get("required").and_then(Value::as_array);
    let complete = required
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .all(|r| out.contains_key(r));
    complete.then_some(out)
}

/// Arguments for a tool made from its input schema: each required
/// property's default, else its first example or enum value, else the
/// simplest value of its type.
pub fn sample_arguments(input_schema: &JsonObject) -> JsonObject {
    let props = input_schema.get("properties").and_then(Value::as_object);
    let required: Vec<&str> = input_schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = JsonObject::new();
    for (name, prop) in props.into_iter().flatten() {
        if !required.contains(&name.as_str()) {
            continue;
        }
        let value = prop
            .get("default")
            .or_else(|| prop.get("examples").and_then(|e| e.get(0)))
            .or_else(|| prop.get("enum").and_then(|e| e.get(0)))
            .or_else(|| prop.get("const"))
            .cloned()
            .unwrap_or_else(|| {
                let kind = match prop.get("type") {
                    Some(Value::Array(types)) => types.iter().find(|t| *t != "null").cloned(),
                    other => other.cloned(),
                };
                match kind.as_ref().and_then(Value::as_str) {
                    Some("number" | "integer") => json!(1),
                    Some("boolean") => json!(true),
                    Some("array") => json!([]),
                    Some("object") => json!({}),
                    Some("null") => Value::Null,
                    _ => json!("test"),
                }
            });
        out.insert(name.clone(), value);
    }
    out
}

/// Connects to the streamable-HTTP MCP server at `url`, with a bearer
/// token when given.
pub async fn connect(
    url: &str,
    token: Option<&str>,
    client: ProbeClient,
) -> anyhow::Result<RunningService<RoleClient, ProbeClient>> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_string());
    if let Some(t) = token {
        config = config.auth_header(t.to_string());
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    client
        .serve(transport)
        .await
        .with_context(|| format!("cannot complete the MCP handshake with {url}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elicitation_is_answered_with_defaults_only_when_they_cover_the_required_fields() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": { "type": "string", "default": "John Doe" },
                "age": { "type": "integer", "default": 30 },
                "note": { "type": "string" }
            },
            "required": ["name", "age"]
        });
        let d = schema_defaults(&schema).unwrap();
        assert_eq!(Value::Object(d), json!({ "name": "John Doe", "age": 30 }));
        let schema = json!({
            "type": "object",
            "properties": { "email": { "type": "string" } },
            "required": ["email"]
        });
        assert!(schema_defaults(&schema).is_none());
    }

    #[test]
    fn sample_arguments_fill_required_fields_by_type() {
        let schema = json!({
            "type": "object",
            "properties": {
                "a": { "type": "number" },
                "b": { "type": "integer", "default": 7 },
                "mode": { "type": "string", "enum": ["fast", "slow"] },
                "text": { "type": ["string", "null"] },
                "optional": { "type": "string" }
            },
            "required": ["a", "b", "mode", "text"]
        });
        let args = sample_arguments(schema.as_object().unwrap());
        assert_eq!(
            Value::Object(args),
            json!({ "a": 1, "b": 7, "mode": "fast", "text": "test" })
        );
    }
}
