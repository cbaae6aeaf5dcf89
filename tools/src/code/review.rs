//! A code review by rules: likely bugs and risky patterns, each with the
//! line it is on, a severity and the reason it matters. Rules are per
//! language (or for every language), matched line by line outside
//! comments; the findings a reviewer would raise first.

use std::sync::OnceLock;

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CodeMetricsParams, DetectLanguageParams, LineKind, code_metrics, detect_language, line_kinds};

/// Input of [`review_code`].
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ReviewParams {
    /// The source code.
    pub code: String,
    /// Its language (as `detect_language` names it); detected when absent.
    #[serde(default)]
    pub language: Option<String>,
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One thing a reviewer would point out.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct Finding {
    /// 1-based line number.
    pub line: usize,
    pub severity: Severity,
    /// Short rule name, e.g. `bare-except`.
    pub rule: String,
    /// Why it matters and what to do instead.
    pub reason: String,
    /// The line as written (trimmed, at most 120 characters).
    pub snippet: String,
}

/// Result of [`review_code`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct Review {
    /// The language the rules were chosen for.
    pub language: String,
    /// Findings in line order.
    pub findings: Vec<Finding>,
}

/// (languages or `*`, rule, severity, pattern, reason).
const RULES: &[(&str, &str, Severity, &str, &str)] = &[
    (
        "python",
        "bare-except",
        Severity::Warning,
        r"^\s*except\s*:",
        "a bare `except:` also catches KeyboardInterrupt and SystemExit and hides real errors; catch the exceptions you expect",
    ),
    (
        "python",
        "mutable-default",
        Severity::Error,
        r"def\s+\w+\s*\([^)]*=\s*(\[\]|\{\}|set\(\)|list\(\)|dict\(\))",
        "a mutable default argument is created once and shared by every call; default to None and create it inside",
    ),
    (
        "python",
        "eval",
        Severity::Error,
        r"\b(eval|exec)\s*\(",
        "eval/exec run arbitrary code; parse the input (ast.literal_eval, json) instead",
    ),
    (
        "python",
        "none-comparison",
        Severity::Info,
        r"[!=]=\s*None\b",
        "compare with None using `is` / `is not`",
    ),
    (
        "python",
        "shell-true",
        Severity::Error,
        r"shell\s*=\s*True",
        "subprocess with shell=True lets input inject shell commands; pass a list of arguments",
    ),
    (
        "python",
        "pickle-load",
        Severity::Warning,
        r"pickle\.loads?\(",
        "unpickling untrusted data runs arbitrary code",
    ),
    (
        "python,javascript,typescript,ruby,php,java,csharp,go",
        "sql-concatenation",
        Severity::Error,
        r#"(?i)["'](select|insert|update|delete)\b[^"']*["']\s*(\+|%|\.\s*format|\.)|f["'](select|insert|update|delete)\b.*\{"#,
        "SQL built by string concatenation or formatting is open to injection; use bound parameters",
    ),
    (
        "javascript,typescript",
        "loose-equality",
        Severity::Warning,
        r"[^=!<>]==[^=]|!=[^=]",
        "`==` and `!=` coerce types (`0 == ''` is true); use `===` and `!==`",
    ),
    (
        "javascript,typescript",
        "eval",
        Severity::Error,
        r"\beval\s*\(|new Function\s*\(",
        "eval runs arbitrary code; parse the input instead",
    ),
    (
        "javascript,typescript",
        "inner-html",
        Severity::Warning,
        r"\.innerHTML\s*=",
        "assigning innerHTML from data allows cross-site scripting; use textContent or sanitise",
    ),
    (
        "javascript,typescript",
        "var",
        Severity::Info,
        r"^\s*var\s",
        "`var` is function-scoped and hoisted; use `let` or `const`",
    ),
    (
        "rust",
        "unwrap",
        Severity::Warning,
        r"\.unwrap\(\)",
        "unwrap() panics on None/Err; handle the case or use `?` with a meaningful error",
    ),
    (
        "rust",
        "unsafe",
        Severity::Warning,
        r"\bunsafe\s*\{",
        "an unsafe block must uphold invariants the compiler cannot check; document why it is sound",
    ),
    (
        "rust",
        "todo",
        Severity::Warning,
        r"\b(todo|unimplemented)!\(",
        "todo!/unimplemented! panic when reached",
    ),
    (
        "c,cpp",
        "unsafe-string",
        Severity::Error,
        r"\b(gets|strcpy|strcat|sprintf)\s*\(",
        "no bounds check: a long input overflows the buffer; use fgets/strncpy/snprintf or std::string",
    ),
    (
        "c,cpp",
        "unchecked-malloc",
        Severity::Warning,
        r"=\s*(\([^)]*\)\s*)?malloc\s*\(",
        "malloc can return NULL; check the result before use",
    ),
    (
        "c,cpp,python,ruby,php",
        "system-call",
        Severity::Warning,
        r"\b(system|popen|os\.system)\s*\(",
        "running a shell command with built strings allows command injection",
    ),
    (
        "cpp",
        "raw-new",
        Severity::Info,
        r"\bnew\s+\w+(\[|\()",
        "a raw `new` needs a matching delete on every path; prefer std::make_unique or a container",
    ),
    (
        "go",
        "ignored-error",
        Severity::Warning,
        r",\s*_\s*:?=\s*\w+[\w.]*\(|^\s*_\s*=\s*\w+[\w.]*\(",
        "the error is discarded; handle it or say why it cannot happen",
    ),
    (
        "go",
        "panic",
        Severity::Info,
        r"\bpanic\(",
        "panic in library code brings the whole program down; return an error",
    ),
    (
        "java",
        "catch-generic",
        Severity::Warning,
        r"catch\s*\(\s*(Exception|Throwable)\s+\w+\s*\)",
        "catching Exception/Throwable hides unexpected failures; catch specific exceptions",
    ),
    (
        "java",
        "string-equality",
        Severity::Error,
        r#"(==|!=)\s*"|"\s*(==|!=)"#,
        "strings compared with == compare references; use .equals()",
    ),
    (
        "java,csharp",
        "empty-catch",
        Severity::Warning,
        r"catch\s*\([^)]*\)\s*\{\s*\}",
        "an empty catch block swallows the error",
    ),
    (
        "shell",
        "unquoted-rm",
        Severity::Error,
        r"rm\s+-[a-z]*r[a-z]*f?\s+[^\s]*\$\{?\w+\}?(\s|$)",
        "rm -r on an unquoted or possibly empty variable can delete the wrong tree; quote it and check it is set",
    ),
    (
        "shell",
        "curl-pipe-shell",
        Severity::Error,
        r"(curl|wget)[^|]*\|\s*(sudo\s+)?(ba|z)?sh\b",
        "piping a download into a shell runs whatever the server sends",
    ),
    (
        "php",
        "superglobal-echo",
        Severity::Error,
        r"echo\s+\$_(GET|POST|REQUEST)",
        "echoing request data unescaped allows cross-site scripting; use htmlspecialchars",
    ),
    (
        "*",
        "hard-coded-secret",
        Severity::Error,
        r#"(?i)\b(password|passwd|secret|api_?key|token|access_?key)\w*\s*[:=]\s*["'][^"']{6,}["']"#,
        "a credential in source code leaks with the code; read it from the environment or a secret store",
    ),
    (
        "*",
        "todo-comment",
        Severity::Info,
        r"\b(TODO|FIXME|XXX|HACK)\b",
        "unfinished work marked in the code",
    ),
];

struct Rule {
    languages: Vec<&'static str>,
    name: &'static str,
    severity: Severity,
    pattern: Regex,
    reason: &'static str,
}

fn rules() -> &'static [Rule] {
    static RULES_COMPILED: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES_COMPILED.get_or_init(|| {
        RULES
            .iter()
            .map(|(langs, name, severity, pattern, reason)| Rule {
                languages: langs.split(',').collect(),
                name,
                severity: *severity,
                pattern: Regex::new(pattern).expect("valid review rule"),
                reason,
            })
            .collect()
    })
}

/// Functions longer than this many lines, or nesting deeper than
/// [`DEEP_NESTING`], are reported as hard to follow.
const LONG_CODE: usize = 80;
const DEEP_NESTING: usize = 5;

/// Reviews `code` with the rules for its language.
pub fn review_code(params: &ReviewParams) -> Review {
    let language = params
        .language
        .clone()
        .filter(|l| !l.trim().is_empty())
        .unwrap_or_else(|| {
            detect_language(&DetectLanguageParams {
                code: params.code.clone(),
            })
            .language
        });
    let mut findings = Vec::new();
    for (i, (kind, line)) in line_kinds(&params.code, &language).into_iter().enumerate() {
        let trimmed = line.trim();
        let is_comment = kind == LineKind::Comment;
        for rule in rules() {
            if !(rule.languages.contains(&"*") || rule.languages.contains(&language.as_str())) {
                continue;
            }
            // Comments are only searched for TODO markers.
            if is_comment && rule.name != "todo-comment" {
                continue;
            }
            if rule.pattern.is_match(line) {
                findings.push(Finding {
                    line: i + 1,
                    severity: rule.severity,
                    rule: rule.name.to_string(),
                    reason: rule.reason.to_string(),
                    snippet: trimmed.chars().take(120).collect(),
                });
            }
        }
    }
    let metrics = code_metrics(&CodeMetricsParams {
        code: params.code.clone(),
        language: Some(language.clone()),
    });
    if metrics.max_nesting > DEEP_NESTING {
        findings.push(Finding {
            line: 1,
            severity: Severity::Info,
            rule: "deep-nesting".into(),
            reason: format!(
                "blocks nest {} levels deep; extract functions or return early to flatten it",
                metrics.max_nesting
            ),
            snippet: String::new(),
        });
    }
    if metrics.functions <= 1 && metrics.code_lines > LONG_CODE {
        findings.push(Finding {
            line: 1,
            severity: Severity::Info,
            rule: "long-function".into(),
            reason: format!(
                "{} lines of code in {} function(s); split it into smaller ones",
                metrics.code_lines,
                metrics.functions.max(1)
            ),
            snippet: String::new(),
        });
    }
    findings.sort_by_key(|f| f.line);
    Review { language, findings }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_hit(code: &str, language: &str) -> Vec<(usize, String)> {
        review_code(&ReviewParams {
            code: code.into(),
            language: Some(language.into()),
        })
        .findings
        .into_iter()
        .map(|f| (f.line, f.rule))
        .collect()
    }

    #[test]
    fn python_pitfalls_are_found_on_their_lines() {
        let code = "import subprocess\n\ndef add(item, items=[]):\n    items.append(item)\n    try:\n        subprocess.run(item, shell=True)\n    except:\n        pass\n    if items == None:\n        return eval(item)\n    # TODO: validate\n    return items\n";
        let hits = rules_hit(code, "python");
        for want in [
            (3, "mutable-default"),
            (6, "shell-true"),
            (7, "bare-except"),
            (9, "none-comparison"),
            (10, "eval"),
            (11, "todo-comment"),
        ] {
            assert!(
                hits.contains(&(want.0, want.1.to_string())),
                "{want:?} not in {hits:?}"
            );
        }
    }

    #[test]
    fn other_languages_and_clean_code() {
        let js = "var x = 1;\nif (x == '1') { el.innerHTML = data; }\nconst q = \"SELECT * FROM users WHERE id=\" + id;\n";
        let hits = rules_hit(js, "javascript");
        assert!(hits.contains(&(1, "var".into())), "{hits:?}");
        assert!(hits.contains(&(2, "loose-equality".into())), "{hits:?}");
        assert!(hits.contains(&(2, "inner-html".into())), "{hits:?}");
        assert!(hits.contains(&(3, "sql-concatenation".into())), "{hits:?}");
        let c = "char buf[8];\ngets(buf);\nstrcpy(buf, argv[1]);\n";
        assert_eq!(
            rules_hit(c, "c"),
            vec![(2, "unsafe-string".into()), (3, "unsafe-string".into())]
        );
        let rust = "fn main() {\n    let v: Vec<u8> = read().unwrap();\n    let api_key = \"sk-live-1234567890\";\n}\n";
        let hits = rules_hit(rust, "rust");
        assert!(
            hits.contains(&(2, "unwrap".into())) && hits.contains(&(3, "hard-coded-secret".into())),
            "{hits:?}"
        );
        let clean = "def add(a, b):\n    \"\"\"Sum of two numbers.\"\"\"\n    return a + b\n";
        assert!(rules_hit(clean, "python").is_empty());
        // A rule in a comment is not a finding.
        assert!(rules_hit("// gets(buf) is unsafe\nint x = 1;\n", "c").is_empty());
    }

    #[test]
    fn the_language_is_detected_when_not_given() {
        let r = review_code(&ReviewParams {
            code: "def f(x=[]):\n    return x\n\nclass A:\n    pass\n".into(),
            language: None,
        });
        assert_eq!(r.language, "python");
        assert_eq!(r.findings[0].rule, "mutable-default");
    }
}
