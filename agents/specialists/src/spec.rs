use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use triage_models::Catalog;

/// A specialist as declared in `specs/agents/NAME.toml`.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The agent's name; the file is `NAME.toml`.
    pub name: String,
    /// `legal`, `finance`, `code` or `general`.
    pub domain: String,
    pub version: String,
    /// What it does, for people and for MCP clients.
    pub description: String,
    /// Model catalog name (see `specs/models.toml`).
    pub model: String,
    pub system_prompt: String,
    /// MCP tools it serves.
    pub tools: Vec<String>,
    /// Requests it should get: the router learns from them.
    pub examples: Vec<String>,
    pub thresholds: Thresholds,
    /// Figures measured on the dev data, shown on the model card.
    pub measured: Vec<Measured>,
    /// The file it was read from.
    pub path: PathBuf,
}

/// When to trust the specialist.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Below this confidence an answer is escalated.
    pub min_confidence: f64,
    /// The router sends a task here only above this probability.
    #[serde(default)]
    pub route_min_probability: f64,
}

/// One measurement of a tool, as `triage eval agents` printed it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    pub tool: String,
    /// The file measured on and how many items it holds.
    pub data: String,
    pub items: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// The command that produced the figures.
    pub command: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: Spanned<String>,
    domain: Spanned<String>,
    version: String,
    description: String,
    model: Spanned<String>,
    system_prompt: String,
    tools: Vec<Spanned<String>>,
    examples: Spanned<Vec<String>>,
    thresholds: Spanned<Thresholds>,
    #[serde(default)]
    measured: Vec<Spanned<Measured>>,
}

/// A spec file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax, a missing or unknown field, or a value that does not fit.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// The domains and the tools each serves (`ask` in every one).
const DOMAINS: &[(&str, &[&str])] = &[
    (
        "legal",
        &["ask", "classify_clauses", "split_clauses", "extract_terms"],
    ),
    (
        "finance",
        &["ask", "sentiment", "extract_amounts", "screen_transaction"],
    ),
    (
        "code",
        &["ask", "detect_language", "explain", "review", "code_metrics"],
    ),
    ("general", &["ask"]),
];

/// The tools a domain's specialist can serve, or `None` for an unknown domain.
pub fn tools_for_domain(domain: &str) -> Option<&'static [&'static str]> {
    DOMAINS.iter().find(|(d, _)| *d == domain).map(|(_, t)| *t)
}

impl AgentSpec {
    /// Reads and validates one spec file against the model catalog.
    pub fn load(path: &Path, catalog: &Catalog) -> Result<AgentSpec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        AgentSpec::parse(&text, path, catalog)
    }

    /// Validates spec text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path, catalog: &Catalog) -> Result<AgentSpec, SpecError> {
        let at = |span: Option<Range<usize>>, message: String| {
            let (line, column) = span.map_or((1, 1), |s| line_col(text, s.start));
            SpecError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let raw: RawSpec = toml::from_str(text).map_err(|e| at(e.span(), e.message().to_string()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if *raw.name.get_ref() != stem {
            return Err(at(
                Some(raw.name.span()),
                format!(
                    "name `{}` must match the file name `{stem}.toml`",
                    raw.name.get_ref()
                ),
            ));
        }
        let domain = raw.domain.get_ref();
        let Some(allowed) = tools_for_domain(domain) else {
            let known: Vec<&str> = DOMAINS.iter().map(|(d, _)| *d).collect();
            return Err(at(
                Some(raw.domain.span()),
                format!("unknown domain `{domain}`; expected one of: {}", known.join(", ")),
            ));
        };
        if catalog.get(raw.model.get_ref()).is_err() {
            let known: Vec<&str> = catalog.models().iter().map(|m| m.name.as_str()).collect();
            return Err(at(
                Some(raw.model.span()),
                format!(
                    "unknown model `{}`; the catalog (specs/models.toml) has: {}",
                    raw.model.get_ref(),
                    known.join(", ")
                ),
            ));
        }
        for tool in &raw.tools {
            if !allowed.contains(&tool.get_ref().as_str()) {
                return Err(at(
                    Some(tool.span()),
                    format!(
                        "unknown tool `{}` for the {domain} domain; expected one of: {}",
                        tool.get_ref(),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        if raw.examples.get_ref().iter().all(|e| e.trim().is_empty()) {
            return Err(at(
                Some(raw.examples.span()),
                "examples must hold at least one request (the router learns from them)".into(),
            ));
        }
        let t = *raw.thresholds.get_ref();
        for (what, v) in [
            ("min_confidence", t.min_confidence),
            ("route_min_probability", t.route_min_probability),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(at(
                    Some(raw.thresholds.span()),
                    format!("thresholds.{what} must be between 0 and 1, got {v}"),
                ));
            }
        }
        for m in &raw.measured {
            if !raw.tools.iter().any(|t| t.get_ref() == &m.get_ref().tool) {
                return Err(at(
                    Some(m.span()),
                    format!(
                        "measured tool `{}` is not one of this spec's tools",
                        m.get_ref().tool
                    ),
                ));
            }
        }
        Ok(AgentSpec {
            name: raw.name.into_inner(),
            domain: raw.domain.into_inner(),
            version: raw.version,
            description: raw.description,
            model: raw.model.into_inner(),
            system_prompt: raw.system_prompt,
            tools: raw.tools.into_iter().map(Spanned::into_inner).collect(),
            examples: raw.examples.into_inner(),
            thresholds: t,
            measured: raw.measured.into_iter().map(Spanned::into_inner).collect(),
            path: path.to_path_buf(),
        })
    }
}

/// The specs shipped in `specs/agents/`, compiled in: (file name, text).
const BUILTIN: &[(&str, &str)] = &[
    ("code.toml", include_str!("../../../specs/agents/code.toml")),
    ("finance.toml", include_str!("../../../specs/agents/finance.toml")),
    ("general.toml", include_str!("../../../specs/agents/general.toml")),
    ("legal.toml", include_str!("../../../specs/agents/legal.toml")),
];

/// The shipped specs (`specs/agents/*.toml`, compiled in), sorted by name.
pub fn builtin(catalog: &Catalog) -> Result<Vec<AgentSpec>, SpecError> {
    BUILTIN
        .iter()
        .map(|(file, text)| AgentSpec::parse(text, &Path::new("specs/agents").join(file), catalog))
        .collect()
}

/// Loads every `*.toml` in a folder, sorted by name.
pub fn load_dir(dir: &Path, catalog: &Catalog) -> Result<Vec<AgentSpec>, SpecError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SpecError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| AgentSpec::load(p, catalog)).collect()
}

/// The 1-based line and column of byte `offset` in `text`, for errors that
/// point into a spec file.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../specs/agents")
    }

    #[test]
    fn the_shipped_specs_load_with_at_least_30_examples_each() {
        let specs = load_dir(&specs_dir(), &Catalog::builtin()).unwrap();
        let compiled = builtin(&Catalog::builtin()).unwrap();
        assert_eq!(specs.len(), compiled.len());
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["code", "finance", "general", "legal"]);
        for s in &specs {
            assert!(s.examples.len() >= 30, "{}: {}", s.name, s.examples.len());
            assert!(s.tools.contains(&"ask".to_string()));
        }
    }

    fn check(edit: impl Fn(&str) -> String) -> String {
        let path = specs_dir().join("legal.toml");
        let text = edit(&std::fs::read_to_string(&path).unwrap());
        AgentSpec::parse(&text, &path, &Catalog::builtin())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn an_unknown_model_names_the_file_line_and_the_known_models() {
        let err = check(|t| t.replace("model = \"smollm2-135m-instruct\"", "model = \"gpt-9\""));
        assert!(
            err.contains("legal.toml:6:9") && err.contains("unknown model `gpt-9`"),
            "{err}"
        );
        assert!(err.contains("smollm2-135m-instruct"), "{err}");
    }

    #[test]
    fn an_unknown_tool_names_its_line_and_the_tools_of_the_domain() {
        let err = check(|t| t.replace("\"extract_terms\"]", "\"sentiment\"]"));
        assert!(
            err.contains("legal.toml:8:54") && err.contains("unknown tool `sentiment` for the legal domain"),
            "{err}"
        );
        assert!(err.contains("classify_clauses"), "{err}");
    }

    #[test]
    fn unknown_fields_syntax_and_ranges_are_located() {
        let err = check(|t| t.replace("version = \"0.1.0\"", "version = \"0.1.0\"\ncolour = \"blue\""));
        assert!(
            err.contains("legal.toml:5:1") && err.contains("unknown field `colour`"),
            "{err}"
        );
        let err = check(|t| t.replace("name = \"legal\"", "name = \"legal"));
        assert!(err.contains("legal.toml:2:"), "{err}");
        let err = check(|t| t.replace("min_confidence = 0.55", "min_confidence = 1.5"));
        assert!(err.contains("min_confidence must be between 0 and 1"), "{err}");
        let err = check(|t| t.replace("domain = \"legal\"", "domain = \"medical\""));
        assert!(
            err.contains("unknown domain `medical`") && err.contains("finance"),
            "{err}"
        );
        let err = check(|t| t.replace("name = \"legal\"", "name = \"lawyer\""));
        assert!(err.contains("must match the file name `legal.toml`"), "{err}");
    }
}
