//! The workflow spec format: `specs/workflows/NAME.yaml`, as written.
//!
//! These types are both what a spec deserialises into and where its JSON
//! Schema comes from (`specs/schema/workflow.schema.json`, kept in step by
//! a golden test), so an editor checks a spec as it is typed. Positions
//! are kept ([`Spanned`]) wherever validation may need to point at a value.

use std::collections::BTreeMap;

use marked_yaml::{Node, Spanned};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// A workflow: named, versioned steps over typed inputs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "triage workflow")]
pub struct WorkflowSpec {
    /// Short name, used in `triage runs list`.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// What the workflow does, for people.
    #[serde(default)]
    pub description: String,
    /// Version of this workflow, recorded with every run.
    #[schemars(with = "String")]
    pub version: Spanned<String>,
    /// The inputs a run takes (`triage run FILE --input NAME=VALUE`).
    #[serde(default)]
    pub inputs: BTreeMap<String, InputSpec>,
    /// Steps, in any order: each runs once every step it needs has finished.
    pub steps: Vec<StepSpec>,
    /// What a run returns: each a template over inputs and step outputs
    /// (`"{{ steps.summary.output.answer }}"`).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub outputs: BTreeMap<String, Spanned<String>>,
    /// Most steps (and fan-out items) running at once; default 4.
    #[serde(default)]
    pub concurrency: Option<usize>,
}

/// One input of a workflow.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Its JSON type.
    #[serde(rename = "type")]
    pub kind: InputType,
    #[serde(default)]
    pub description: String,
    /// Value when the run does not give one; without it the input is
    /// required.
    #[serde(default)]
    pub default: Option<Value>,
}

/// The JSON type of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    String,
    Number,
    Integer,
    Boolean,
    Array,
    Object,
}

impl InputType {
    /// Whether `v` has this type.
    pub fn admits(self, v: &Value) -> bool {
        match self {
            InputType::String => v.is_string(),
            InputType::Number => v.is_number(),
            InputType::Integer => v.is_i64() || v.is_u64(),
            InputType::Boolean => v.is_boolean(),
            InputType::Array => v.is_array(),
            InputType::Object => v.is_object(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Number => "number",
            InputType::Integer => "integer",
            InputType::Boolean => "boolean",
            InputType::Array => "array",
            InputType::Object => "object",
        }
    }
}

/// One step. It does exactly one thing: call an agent's `tool`, ask a
/// specialist (`agent` + `prompt`), or ask whichever specialist the router
/// picks (`route: auto` + `prompt`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique name; later steps read this step's result as
    /// `steps.ID.output`.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    #[serde(default)]
    pub description: String,
    /// The registered agent to call.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub agent: Option<Spanned<String>>,
    /// The agent's tool to call, with `with` as its arguments.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub tool: Option<Spanned<String>>,
    /// `auto`: the router picks the specialist for `prompt`.
    #[serde(default)]
    #[schemars(with = "Option<RouteMode>")]
    pub route: Option<Spanned<RouteMode>>,
    /// A question for a specialist's `ask` (a template), answered through
    /// the cascade.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub prompt: Option<Spanned<String>>,
    /// The tool's arguments. Strings are templates over `inputs`, `steps`,
    /// and in a fan-out `item` and `index`; a string that is one
    /// `{{ expression }}` passes the expression's value (a list stays a
    /// list).
    #[serde(default)]
    pub with: BTreeMap<String, Value>,
    /// Steps that must finish first (besides those the templates read).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub needs: Vec<Spanned<String>>,
    /// Run only when this expression is true (`steps.mood.output.label ==
    /// 'negative'`); otherwise the step, and the steps that need it, are
    /// skipped.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub when: Option<Spanned<String>>,
    /// Run once per element of this list expression
    /// (`steps.split.output.clauses`), as `item` and `index`; the output
    /// is the list of results, in order.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub for_each: Option<Spanned<String>>,
    /// Retries when a call fails.
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    /// Longest one attempt may take: `500ms`, `30s`, `2m`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// For `prompt` steps: below this confidence the cascade spends more
    /// compute or escalates (default: the specialist's threshold). For
    /// tool steps: a result below it is flagged as low-confidence.
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    pub min_confidence: Option<Spanned<f64>>,
    /// For `prompt` steps: the longest answer, in tokens.
    #[serde(default)]
    pub max_tokens: Option<usize>,
}

/// How a step picks its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RouteMode {
    /// The router chooses the specialist.
    Auto,
}

/// How a failed step is retried.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first included (1 = no retry).
    pub attempts: u32,
    /// Pause before the first retry; it doubles each time. Default 500 ms.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub backoff: Option<Spanned<String>>,
}

/// The JSON Schema of the workflow format, pretty-printed, as written to
/// `specs/schema/workflow.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(WorkflowSpec);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serialises");
    text.push('\n');
    text
}

/// A YAML node as JSON, scalars typed as YAML's core schema reads them
/// (`64` a number, `true` a boolean, `"64"` a string) unless quoted.
pub fn node_to_json(node: &Node) -> Value {
    match node {
        Node::Scalar(s) => {
            let text = s.as_str();
            if !s.may_coerce() {
                return Value::String(text.to_string());
            }
            match text {
                "~" | "null" | "Null" | "NULL" => Value::Null,
                "true" | "True" | "TRUE" => Value::Bool(true),
                "false" | "False" | "FALSE" => Value::Bool(false),
                _ => {
                    if let Ok(i) = text.parse::<i64>() {
                        Value::from(i)
                    } else if let Some(f) = text
                        .parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite() && text.chars().any(|c| c.is_ascii_digit()))
                    {
                        Value::from(f)
                    } else {
                        Value::String(text.to_string())
                    }
                }
            }
        }
        Node::Sequence(seq) => Value::Array(seq.iter().map(node_to_json).collect()),
        Node::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().to_string(), node_to_json(v)))
                .collect(),
        ),
    }
}

/// Parses a duration as written in a spec: `250ms`, `30s`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write it like 500ms, 30s, 2m or 1h"))?;
    let seconds = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "`{text}` has no unit; write it like 500ms, 30s, 2m or 1h"
            ));
        }
    };
    if seconds <= 0.0 {
        return Err(format!("`{text}` must be longer than zero"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema file is generated from these types; regenerate it with
    /// `TRIAGE_BLESS=1 cargo test -p triage --lib schema_file`.
    #[test]
    fn schema_file_is_in_step_with_the_types() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/schema/workflow.schema.json");
        let generated = json_schema();
        if std::env::var_os("TRIAGE_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &generated).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "{} is out of date: run TRIAGE_BLESS=1 cargo test -p triage --lib schema_file",
            path.display()
        );
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
        assert_eq!(parse_duration("2m").unwrap().as_secs(), 120);
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
        assert!(parse_duration("0s").unwrap_err().contains("longer than zero"));
    }

    #[test]
    fn yaml_scalars_are_typed_unless_quoted() {
        let node = marked_yaml::parse_yaml_with_options(
            0,
            "a: 64\nb: \"64\"\nc: true\nd: 1.5\ne: text\nf: [1, x]\n",
            super::super::plan::yaml_options(),
        )
        .unwrap();
        assert_eq!(
            node_to_json(&node),
            serde_json::json!({"a": 64, "b": "64", "c": true, "d": 1.5, "e": "text", "f": [1, "x"]})
        );
    }
}
