//! Templates in workflow specs (minijinja): `with` arguments, prompts,
//! outputs, and the `when` and `for_each` expressions.
//!
//! The context is `inputs` (the run's inputs), `steps` (each finished
//! step's `output`, `confidence`, `agent`…), and in a fan-out `item` and
//! `index`. A string that is a single `{{ expression }}` gives the
//! expression's value, so a list passed between steps stays a list; any
//! other string renders to text. Printing something undefined is an
//! error rather than an empty string, so a misspelt field fails loudly.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env
    })
}

/// The expression inside `{{ … }}` when `text` is exactly one, else the
/// text itself.
pub fn strip_braces(text: &str) -> &str {
    single_expression(text).unwrap_or(text.trim())
}

fn single_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    // `{{ a }} and {{ b }}` is two expressions, not one.
    (!inner.contains("{{") && !inner.contains("}}"))
        .then_some(inner.trim().trim_start_matches('-').trim_end_matches('-').trim())
}

/// The variables a template reads (`steps.clauses.output`, `inputs.text`).
pub fn template_variables(text: &str) -> Result<BTreeSet<String>, String> {
    let t = env().template_from_str(text).map_err(|e| describe(&e))?;
    let mut vars: BTreeSet<String> = t.undeclared_variables(true).into_iter().collect();
    // minijinja's analysis does not look inside every construct (slices,
    // for one), so references written out are collected as well.
    static REFS: OnceLock<regex::Regex> = OnceLock::new();
    let refs = REFS.get_or_init(|| {
        regex::Regex::new(r#"\b(steps|inputs)(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*['"]([^'"]+)['"]\s*\])"#)
            .expect("a valid pattern")
    });
    for c in refs.captures_iter(text) {
        let name = c.get(2).or_else(|| c.get(3)).map_or("", |m| m.as_str());
        vars.insert(format!("{}.{name}", &c[1]));
    }
    Ok(vars)
}

/// The variables an expression reads.
pub fn expression_variables(expr: &str) -> Result<BTreeSet<String>, String> {
    // Checked as an expression, analysed as the template `{{ expr }}`
    // (minijinja finds the variables of templates).
    env().compile_expression(expr).map_err(|e| describe(&e))?;
    template_variables(&format!("{{{{ {expr} }}}}"))
}

/// Renders a `with` value against `ctx`: strings as templates (a single
/// `{{ expression }}` keeps its value's type), lists and mappings element
/// by element, anything else as it is.
pub fn render(value: &Value, ctx: &Value) -> Result<Value, String> {
    match value {
        Value::String(s) => render_str(s, ctx),
        Value::Array(items) => items
            .iter()
            .map(|v| render(v, ctx))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), render(v, ctx)?)))
            .collect::<Result<_, String>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

/// Renders one template string.
pub fn render_str(text: &str, ctx: &Value) -> Result<Value, String> {
    if let Some(expr) = single_expression(text) {
        return eval(expr, ctx);
    }
    if !text.contains("{{") && !text.contains("{%") {
        return Ok(Value::String(text.to_string()));
    }
    let ctx = minijinja::Value::from(minijinja::value::Serde(ctx));
    env()
        .render_str(text, ctx)
        .map(Value::String)
        .map_err(|e| describe(&e))
}

/// Evaluates an expression to a JSON value.
pub fn eval(expr: &str, ctx: &Value) -> Result<Value, String> {
    let compiled = env().compile_expression(expr).map_err(|e| describe(&e))?;
    let v = compiled
        .eval(minijinja::Value::from(minijinja::value::Serde(ctx)))
        .map_err(|e| describe(&e))?;
    if v.is_undefined() {
        return Err(format!(
            "`{expr}` is undefined (check the step id and field names)"
        ));
    }
    serde_json::to_value(&v).map_err(|e| format!("`{expr}` has no JSON value: {e}"))
}

/// Evaluates a `when` expression: true or false.
pub fn eval_condition(expr: &str, ctx: &Value) -> Result<bool, String> {
    let compiled = env().compile_expression(expr).map_err(|e| describe(&e))?;
    let v = compiled
        .eval(minijinja::Value::from(minijinja::value::Serde(ctx)))
        .map_err(|e| describe(&e))?;
    Ok(v.is_true())
}

/// Evaluates a `for_each` expression: it must give a list.
pub fn eval_list(expr: &str, ctx: &Value) -> Result<Vec<Value>, String> {
    match eval(expr, ctx)? {
        Value::Array(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        other => Err(format!(
            "`{expr}` must give a list to fan out over, but gave {}",
            match other {
                Value::Object(_) => "a mapping".to_string(),
                v => v.to_string().chars().take(60).collect(),
            }
        )),
    }
}

/// A minijinja error in one line, without its debug dump.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e.detail().map_or_else(|| e.kind().to_string(), str::to_string);
    if let Some(line) = e.line()
        && line > 1
    {
        s.push_str(&format!(" (line {line} of the template)"));
    }
    s
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_single_expression_keeps_its_type() {
        let ctx = json!({"steps": {"split": {"output": {"clauses": ["a", "b"]}}}, "inputs": {"n": 3}});
        assert_eq!(
            render(&json!("{{ steps.split.output.clauses }}"), &ctx).unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(render(&json!("{{ inputs.n + 1 }}"), &ctx).unwrap(), json!(4));
        assert_eq!(
            render(&json!("n is {{ inputs.n }}"), &ctx).unwrap(),
            json!("n is 3")
        );
        assert_eq!(
            render(&json!({"list": ["{{ inputs.n }}", "x"], "flag": true}), &ctx).unwrap(),
            json!({"list": [3, "x"], "flag": true})
        );
    }

    #[test]
    fn misspelt_fields_fail_loudly() {
        let ctx = json!({"steps": {"a": {"output": {"label": "x"}}}});
        assert!(
            render_str("{{ steps.a.output.lable }}", &ctx)
                .unwrap_err()
                .contains("undefined")
        );
        assert!(render_str("label: {{ steps.a.output.lable }}", &ctx).is_err());
        // A condition on something missing is false, not an error.
        assert!(!eval_condition("steps.a.output.missing", &ctx).unwrap());
        assert!(eval_condition("steps.a.output.label == 'x'", &ctx).unwrap());
    }

    #[test]
    fn variables_are_found_with_their_paths() {
        let vars = template_variables(
            "{{ steps.a.output.x }} {% for c in steps.b.output %}{{ c }}{% endfor %} {{ inputs.t }}",
        )
        .unwrap();
        let roots: BTreeSet<String> = vars
            .iter()
            .map(|v| v.split('.').take(2).collect::<Vec<_>>().join("."))
            .collect();
        assert_eq!(roots, ["inputs.t", "steps.a", "steps.b"].map(String::from).into());
        assert!(template_variables("{{ unclosed").is_err());
        let vars = expression_variables("steps.split.output.clauses[:4] | length > inputs.n").unwrap();
        assert!(vars.iter().any(|v| v.starts_with("steps.split")), "{vars:?}");
        assert!(vars.iter().any(|v| v.starts_with("inputs.n")), "{vars:?}");
    }

    #[test]
    fn for_each_needs_a_list() {
        let ctx = json!({"inputs": {"xs": [1, 2], "s": "text"}});
        assert_eq!(eval_list("inputs.xs", &ctx).unwrap(), vec![json!(1), json!(2)]);
        assert!(
            eval_list("inputs.s", &ctx)
                .unwrap_err()
                .contains("must give a list")
        );
    }
}
