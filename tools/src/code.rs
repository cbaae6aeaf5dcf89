//! Code tools: which programming language a snippet is in, and how big and
//! how complex it is.
//!
//! Language detection scores each language by the syntax that marks it:
//! keywords, declarations, library calls, comment and string forms. Each
//! signal has a weight by how distinctive it is (`using namespace std` says
//! C++; a `;` at the end of a line says little). A signal counts more when
//! it recurs, with diminishing returns, so one long file does not drown the
//! distinctive features in common ones. The scores become a probability per
//! language (a softmax), whose top value is the confidence; text with too
//! little evidence for any language is `unknown`.

use std::sync::OnceLock;

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod review;

pub use review::{Finding, Review, ReviewParams, Severity, review_code};

/// The languages [`detect_language`] knows, spelled as it returns them.
pub const LANGUAGES: &[&str] = &[
    "c",
    "cpp",
    "csharp",
    "go",
    "java",
    "javascript",
    "kotlin",
    "php",
    "python",
    "ruby",
    "rust",
    "shell",
    "sql",
    "swift",
    "typescript",
];

/// Returned when no language has enough evidence.
pub const UNKNOWN: &str = "unknown";

/// Below this score the text is `unknown`: one distinctive signal is not enough.
const MIN_SCORE: f64 = 3.0;
/// Softmax temperature turning scores into probabilities.
const TEMPERATURE: f64 = 2.5;

/// Input of [`detect_language`].
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct DetectLanguageParams {
    /// The source code (a snippet or a whole file).
    pub code: String,
}

/// One candidate language with its probability.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct LanguageScore {
    /// Language name, lower case (`python`, `cpp`, `csharp`, ...).
    pub language: String,
    /// Share of probability among the known languages.
    pub probability: f64,
}

/// Result of [`detect_language`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct DetectedLanguage {
    /// The most likely language, or `unknown`.
    pub language: String,
    /// Probability of `language` (0 for `unknown`).
    pub confidence: f64,
    /// The three most likely languages, best first.
    pub candidates: Vec<LanguageScore>,
    /// Signals that decided it, e.g. `using namespace std`.
    pub evidence: Vec<String>,
}

struct Signal {
    language: &'static str,
    pattern: Regex,
    weight: f64,
    name: &'static str,
}

/// (language, weight, regex, name). Patterns are multi-line: `^` and `$`
/// match at line ends.
const SIGNALS: &[(&str, f64, &str, &str)] = &[
    // Python
    (
        "python",
        3.0,
        r"(?m)^\s*def \w+\s*\(.*\)\s*(->\s*[\w\[\], .]+)?:\s*$",
        "def ...:",
    ),
    (
        "python",
        3.0,
        r"(?m)^\s*from [\w.]+ import [\w*]",
        "from ... import",
    ),
    (
        "python",
        2.0,
        r"(?m)^\s*import [\w.]+(\s+as \w+)?\s*$",
        "import module",
    ),
    (
        "python",
        2.0,
        r"(?m)^\s*(if|elif|for|while|with|try|except|else|class)\b[^{};]*:\s*$",
        "block colon",
    ),
    ("python", 3.0, r"\belif\b", "elif"),
    ("python", 2.0, r#"""""#, "docstring"),
    ("python", 1.0, r"\b(None|True|False)\b", "None/True/False"),
    ("python", 1.0, r"\bself\b", "self"),
    (
        "python",
        1.5,
        r"\b(range|len|enumerate|isinstance|zip)\(",
        "builtins",
    ),
    ("python", 2.0, r"\b(is not|not in)\b", "is not / not in"),
    ("python", 1.0, r"\blambda \w*:", "lambda"),
    ("python", 1.5, r"\bprint\((f?['\x22]|\w)", "print()"),
    // Rust
    ("rust", 3.0, r"\bfn \w+\s*(<[^>]*>)?\s*\(", "fn"),
    ("rust", 3.0, r"\blet mut\b", "let mut"),
    (
        "rust",
        3.0,
        r"(?m)^\s*(pub(\(crate\))? )?(impl|trait|mod)\b",
        "impl/trait/mod",
    ),
    (
        "rust",
        3.0,
        r"\b(Vec|Option|Result|HashMap|Box|Rc|Arc)<",
        "std generics",
    ),
    (
        "rust",
        3.0,
        r"\b(println|format|vec|assert|assert_eq|panic|write|writeln)!\s*[\(\[]",
        "macros!",
    ),
    ("rust", 3.0, r"(?m)^\s*use (std|crate|super|self)::", "use std::"),
    (
        "rust",
        2.0,
        r"\b(i32|u32|i64|u64|usize|isize|f32|f64|u8)\b",
        "integer types",
    ),
    ("rust", 2.0, r"&mut \w|&self\b|&str\b", "borrows"),
    ("rust", 3.0, r"#\[(derive|test|cfg)", "attributes"),
    (
        "rust",
        1.0,
        r"\.(iter|unwrap|collect|map|clone)\(\)",
        "iterator calls",
    ),
    (
        "rust",
        2.0,
        r"\w\s*:\s*(&\s*)?(i32|i64|u32|u64|usize|f32|f64|bool|str|String|Vec<)",
        "typed parameters",
    ),
    // Go
    ("go", 4.0, r"(?m)^package \w+\s*$", "package"),
    ("go", 3.0, r"(?m)^func (\(\w+ \*?\w+\) )?\w+\(", "func"),
    ("go", 2.5, r":=", ":="),
    ("go", 3.0, r"\bfmt\.\w+\(", "fmt."),
    ("go", 3.0, r"(?m)^import \(", "import ("),
    ("go", 2.0, r"\b(chan|defer|go func)\b", "chan/defer"),
    (
        "go",
        2.0,
        r"\[\](int|string|float64|byte|rune|bool|\w+)\b",
        "[]T slices",
    ),
    ("go", 2.0, r"\bfor \w+(, \w+)? := range\b", "range loop"),
    (
        "go",
        1.5,
        r"\b(strings|strconv|math|sort)\.\w+\(",
        "stdlib packages",
    ),
    ("go", 1.5, r"\bmake\(\[\]|\bmake\(map\[", "make()"),
    (
        "go",
        2.5,
        r"\bfunc \w+\((\w+ [\w\[\]*.]+(, )?)*\)\s*(\(?[\w\[\]*, ]+\)?)?\s*\{",
        "func f(x T) T {",
    ),
    ("go", 1.5, r"\b(float64|int64|int32|rune|uint8)\b", "Go types"),
    // Java
    ("java", 4.0, r"System\.out\.print", "System.out"),
    ("java", 4.0, r"(?m)^import java\.", "import java."),
    ("java", 3.0, r"(?m)^package [\w.]+;", "package ...;"),
    (
        "java",
        2.0,
        r"\bpublic (static )?(final )?(class|interface|enum)\b",
        "public class",
    ),
    (
        "java",
        2.0,
        r"\bpublic (static )?[\w<>\[\]]+ \w+\(",
        "public method",
    ),
    ("java", 3.0, r"@Override", "@Override"),
    ("java", 2.0, r"\bboolean\b", "boolean"),
    (
        "java",
        2.0,
        r"\b(ArrayList|HashMap|HashSet|List|Map|Set|Arrays|Collections)\b[<.]",
        "java.util",
    ),
    (
        "java",
        1.5,
        r"\.(equals|size|length|charAt|substring)\(",
        "String/List methods",
    ),
    (
        "java",
        1.0,
        r"\b(extends|implements|throws)\b",
        "extends/implements",
    ),
    ("java", 2.0, r"\bString\[\]", "String[]"),
    // C#
    ("csharp", 5.0, r"(?m)^\s*using System(\.[\w.]+)?;", "using System"),
    ("csharp", 5.0, r"Console\.Write", "Console.Write"),
    (
        "csharp",
        5.0,
        r"\{\s*get;\s*(private )?(set;)?\s*\}",
        "{ get; set; }",
    ),
    (
        "csharp",
        3.0,
        r"(?m)^\s*namespace [\w.]+\s*(\{|;)?\s*$",
        "namespace",
    ),
    ("csharp", 2.0, r"\bforeach\s*\(\s*var\b", "foreach (var"),
    ("csharp", 2.0, r"\.(Length|Count)\b", ".Length/.Count"),
    (
        "csharp",
        3.0,
        r"\b(async Task|Task<|IEnumerable<|List<string>|string\[\])",
        "C# types",
    ),
    ("csharp", 4.0, r"///\s*<summary>", "<summary>"),
    (
        "csharp",
        2.0,
        r"\bpublic (override |virtual |static |readonly )+\w",
        "modifiers",
    ),
    ("csharp", 1.5, r"\b\d+(\.\d+)?[mM]\b|\b0[bB][01]+", "C# literals"),
    // C++
    ("cpp", 5.0, r"using namespace std", "using namespace std"),
    ("cpp", 4.0, r"\bstd::", "std::"),
    (
        "cpp",
        3.0,
        r"#include\s*<(vector|string|iostream|algorithm|map|set|unordered_map|memory|sstream|cmath|cstdio|cstdlib|climits|utility|queue|stack)>",
        "C++ headers",
    ),
    (
        "cpp",
        2.5,
        r"\b(vector|map|set|unordered_map|pair)<",
        "STL containers",
    ),
    ("cpp", 3.0, r"\b(cout|cin|endl)\b", "iostream"),
    ("cpp", 3.0, r"\btemplate\s*<", "template"),
    (
        "cpp",
        4.0,
        r"(?m)^\s*(public|private|protected):",
        "access sections",
    ),
    ("cpp", 1.5, r"\b(nullptr|auto|string)\b", "C++ types"),
    ("cpp", 0.5, r"\w::\w", "::"),
    // C
    (
        "c",
        3.0,
        r"#include\s*<(stdio|stdlib|string|math|stddef|stdint|stdbool|assert|ctype|limits|errno|signal|time|unistd)\.h>",
        "C headers",
    ),
    (
        "c",
        2.0,
        r"\b(printf|scanf|malloc|calloc|free|strlen|strcpy|memcpy|memset|fprintf|sizeof)\b",
        "libc",
    ),
    ("c", 2.0, r"\btypedef\b", "typedef"),
    (
        "c",
        1.5,
        r"(?m)^\s*#\s*(define|ifdef|ifndef|endif|if)\b",
        "preprocessor",
    ),
    ("c", 1.5, r"\bstruct \w+\s*\{|\bstruct \w+ \*?\w", "struct"),
    (
        "c",
        1.0,
        r"\b(int|float|double|char|unsigned|long|void)\s+\**\w+\s*[=;,\(\[]",
        "C declarations",
    ),
    ("c", 1.0, r"\bNULL\b", "NULL"),
    ("c", 0.5, r"/\*", "block comment"),
    ("c", 2.0, r"#include\s*\x22[\w/.]+\.h\x22", "#include \"x.h\""),
    (
        "c",
        1.5,
        r"\bstatic (inline )?(const )?(void|int|char|unsigned|long|struct)\b",
        "static decl",
    ),
    // JavaScript
    (
        "javascript",
        3.0,
        r"\bconst \w+ = (async )?\(?[\w, ]*\)? =>",
        "const f = () =>",
    ),
    ("javascript", 3.0, r"\bconsole\.(log|error|warn)\(", "console.log"),
    (
        "javascript",
        2.5,
        r"\bfunction\s*\w*\s*\([\w, ]*\)\s*\{",
        "function() {",
    ),
    ("javascript", 2.5, r"===|!==", "=== / !=="),
    ("javascript", 3.0, r"\b(document|window)\.\w", "DOM"),
    (
        "javascript",
        3.0,
        r"\brequire\(['\x22]|module\.exports",
        "require/exports",
    ),
    (
        "javascript",
        2.0,
        r"(?m)^\s*export (default |const |function |class )|(?m)^\s*import .* from ['\x22]",
        "ES modules",
    ),
    ("javascript", 2.0, r"\bundefined\b", "undefined"),
    ("javascript", 1.5, r"\b(var|let) \w+ = ", "var/let"),
    ("javascript", 1.0, r"=>", "=>"),
    (
        "javascript",
        1.0,
        r"\.(push|reduce|forEach|filter|map|slice|splice|join)\(",
        "array methods",
    ),
    ("javascript", 1.0, r"\bMath\.\w+\(", "Math."),
    // TypeScript (also earns part of the JavaScript score, see below)
    (
        "typescript",
        4.0,
        r":\s*(string|number|boolean|any|void|unknown|never)(\[\])?\b",
        "type annotations",
    ),
    (
        "typescript",
        5.0,
        r"constructor\(\s*(public|private|protected|readonly) ",
        "parameter properties",
    ),
    (
        "typescript",
        4.0,
        r"(?m)^\s*(export )?(interface|type) \w+(<[^>]*>)?\s*(=|\{|extends)",
        "interface/type",
    ),
    (
        "typescript",
        3.0,
        r"\b(private|public|protected|readonly) \w+\s*[:;=]",
        "class members",
    ),
    (
        "typescript",
        3.0,
        r"\bas (string|number|any|unknown|const)\b",
        "as casts",
    ),
    (
        "typescript",
        2.0,
        r"\bclass \w+ (extends|implements) \w+",
        "class extends",
    ),
    ("typescript", 1.0, r"\bconstructor\(", "constructor"),
    // PHP
    ("php", 10.0, r"<\?php", "<?php"),
    ("php", 4.0, r"\$this->", "$this->"),
    ("php", 2.0, r"\$\w+\s*(=|->|\[|;|\))", "$variables"),
    (
        "php",
        3.0,
        r"(?m)^\s*(namespace|use) [\w\\]+\\[\w\\]+;",
        "namespace a\\b;",
    ),
    ("php", 2.0, r"\barray\(|\bfunction \w+\(\$", "array()/function($"),
    ("php", 1.5, r"\becho\b.*;", "echo ...;"),
    // Ruby
    (
        "ruby",
        3.0,
        r"(?m)^\s*def [\w.?!]+(\(.*\))?\s*$",
        "def without colon",
    ),
    ("ruby", 2.0, r"(?m)^\s*end\s*$", "end"),
    ("ruby", 2.5, r"\bputs\b", "puts"),
    ("ruby", 2.5, r"(?m)^\s*require(_relative)? ['\x22]", "require"),
    ("ruby", 4.0, r"\battr_(accessor|reader|writer)\b", "attr_accessor"),
    ("ruby", 4.0, r"\bdo \|[\w, ]+\|", "do |x|"),
    ("ruby", 4.0, r"\belsif\b", "elsif"),
    ("ruby", 2.5, r"\bunless\b", "unless"),
    ("ruby", 2.0, r"\.each(_with_index)?\b", ".each"),
    (
        "ruby",
        1.5,
        r"(?m)^\s*(module|class) \w+(::\w+)*( < [\w:]+)?\s*$",
        "class/module",
    ),
    ("ruby", 1.0, r"\bnil\b", "nil"),
    ("ruby", 1.0, r"@\w+", "@ivar"),
    ("ruby", 2.0, r":\w+\s*=>|\w+: [\w'\x22]", "symbols"),
    // Swift
    (
        "swift",
        5.0,
        r"(?m)^import (Foundation|UIKit|SwiftUI|Cocoa|XCTest)\b",
        "import Foundation",
    ),
    ("swift", 3.0, r"\bfunc \w+(<[^>]*>)?\((_ )?\w+: ", "func f(x: T)"),
    (
        "swift",
        4.0,
        r"\b(if|guard|while) (let|var) \w+",
        "if let / guard let",
    ),
    ("swift", 3.0, r"\bguard\b", "guard"),
    ("swift", 3.0, r#"\\\("#, "\\(interpolation)"),
    (
        "swift",
        2.0,
        r"\b(let|var) \w+: \[?(Int|String|Double|Bool|Float|Character)\b",
        "typed let/var",
    ),
    (
        "swift",
        3.0,
        r"(?m)^\s*(extension|protocol) \w+",
        "extension/protocol",
    ),
    ("swift", 2.0, r"\binit\(|\bdeinit\b", "init"),
    ("swift", 1.5, r"(?m)^\s*(let|var) \w+ = ", "let/var"),
    ("swift", 1.0, r"\b(Int|String|Double|Bool)\b", "Swift types"),
    ("swift", 1.5, r"->\s*(Int|String|Bool|Double|Void|\[)", "-> Type"),
    // Kotlin
    ("kotlin", 4.0, r"\bfun \w+(<[^>]*>)?\(", "fun"),
    ("kotlin", 2.5, r"\bval \w+", "val"),
    (
        "kotlin",
        5.0,
        r"\b(data class|companion object|override fun|sealed class)\b",
        "data class/override fun",
    ),
    ("kotlin", 2.0, r"\bwhen\s*(\(|\{)", "when"),
    (
        "kotlin",
        4.0,
        r"\b(mutableListOf|listOf|mapOf|setOf|arrayOf|IntArray)\(",
        "listOf()",
    ),
    (
        "kotlin",
        3.0,
        r"(?m)^import (kotlin|android|kotlinx)\.",
        "import kotlin.",
    ),
    ("kotlin", 1.5, r"\bprintln\(", "println"),
    ("kotlin", 1.5, r"\?:|!!\.", "elvis"),
    // Shell
    ("shell", 10.0, r"(?m)\A#!.*\b(ba|z|k|da)?sh\b", "shebang"),
    (
        "shell",
        4.0,
        r"(?m)^\s*(if|while|until|elif) \[\[? ",
        "if [ ... ]",
    ),
    ("shell", 4.0, r"(?m)^\s*(fi|esac)\s*$", "fi/esac"),
    ("shell", 2.0, r"(?m)^\s*done\b", "done"),
    ("shell", 2.0, r"(?m);\s*then\s*$|^\s*then\s*$", "then"),
    ("shell", 2.5, r"\$\(", "$(...)"),
    ("shell", 1.5, r"\$\{?\w+\}?", "$VAR"),
    ("shell", 3.0, r"(?m)^\s*export \w+=", "export VAR="),
    ("shell", 1.5, r"(?m)^\s*\w+=\S", "VAR=value"),
    ("shell", 1.5, r"\becho\b", "echo"),
    (
        "shell",
        3.0,
        r"\|\s*(grep|awk|sed|sort|uniq|xargs|cut|head|tail|wc|tr)\b",
        "pipes",
    ),
    (
        "shell",
        2.0,
        r"(?m)^\s*(sudo|apt-get|cd|mkdir|rm|cp|mv|chmod|curl|wget|git|make|cat|ls|source) ",
        "commands",
    ),
    ("shell", 3.0, r"\blocal \w+=", "local"),
    ("shell", 1.5, r"(?m)\w\s+&\s*$", "background &"),
    (
        "shell",
        2.0,
        r"(?m)^\s*(function \w+|\w+\(\))\s*\{",
        "shell function",
    ),
    // SQL
    ("sql", 4.0, r"(?is)\bselect\b.{1,400}?\bfrom\b", "SELECT ... FROM"),
    (
        "sql",
        4.0,
        r"(?i)\b(insert into|delete from|create (or replace )?(table|view|index|procedure|function|database|package|type|trigger)|alter table|drop (table|view|index))\b",
        "DDL/DML",
    ),
    ("sql", 3.0, r"(?i)\bupdate \w+ set\b", "UPDATE ... SET"),
    (
        "sql",
        2.0,
        r"(?i)\b(where|inner join|left join|group by|order by|having)\b",
        "clauses",
    ),
    (
        "sql",
        3.0,
        r"(?i)\b(varchar2?|nvarchar|integer|primary key|foreign key|not null)\b",
        "column types",
    ),
    ("sql", 1.5, r"(?m)^\s*--", "-- comment"),
    ("sql", 3.0, r"(?i)\bdeclare @\w+|@@\w+", "T-SQL variables"),
    (
        "sql",
        1.5,
        r"(?im)^\s*(select|insert|update|delete|with|create|alter|drop|declare|grant)\s",
        "statement start",
    ),
];

fn signals() -> &'static [Signal] {
    static SIGNALS_COMPILED: OnceLock<Vec<Signal>> = OnceLock::new();
    SIGNALS_COMPILED.get_or_init(|| {
        SIGNALS
            .iter()
            .map(|&(language, weight, pattern, name)| Signal {
                language,
                pattern: Regex::new(pattern).unwrap_or_else(|e| panic!("signal {name}: {e}")),
                weight,
                name,
            })
            .collect()
    })
}

/// Names the programming language of a piece of code.
pub fn detect_language(params: &DetectLanguageParams) -> DetectedLanguage {
    let code = params.code.as_str();
    let mut scores = vec![0.0f64; LANGUAGES.len()];
    let mut evidence: Vec<Vec<(f64, &str)>> = vec![Vec::new(); LANGUAGES.len()];
    for s in signals() {
        let count = s.pattern.find_iter(code).take(50).count();
        if count == 0 {
            continue;
        }
        // Diminishing returns: 1 match counts 1, 3 count 2, 8 count 3.
        let contribution = s.weight * (1.0 + (count as f64).ln().min(2.0) / 1.1);
        let i = index_of(s.language);
        scores[i] += contribution;
        evidence[i].push((contribution, s.name));
    }
    // TypeScript is JavaScript with types: it inherits most of its score, so
    // it wins exactly when type syntax is present.
    let (js, ts) = (index_of("javascript"), index_of("typescript"));
    if scores[ts] > 0.0 {
        scores[ts] += 0.9 * scores[js];
    }
    // C++ accepts C's headers and calls; they count for it too, a little less.
    let (c, cpp) = (index_of("c"), index_of("cpp"));
    if scores[cpp] > 0.0 {
        scores[cpp] += 0.8 * scores[c];
    }
    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
    let exp: Vec<f64> = scores.iter().map(|s| ((s - max) / TEMPERATURE).exp()).collect();
    let total: f64 = exp.iter().sum();
    let mut ranked: Vec<(usize, f64)> = exp.iter().map(|e| e / total).enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let candidates = ranked
        .iter()
        .take(3)
        .map(|&(i, p)| LanguageScore {
            language: LANGUAGES[i].to_string(),
            probability: round3(p),
        })
        .collect();
    let (best, p) = ranked[0];
    if scores[best] < MIN_SCORE {
        return DetectedLanguage {
            language: UNKNOWN.to_string(),
            confidence: 0.0,
            candidates,
            evidence: Vec::new(),
        };
    }
    let mut why = evidence[best].clone();
    why.sort_by(|a, b| b.0.total_cmp(&a.0));
    DetectedLanguage {
        language: LANGUAGES[best].to_string(),
        confidence: round3(p),
        candidates,
        evidence: why.into_iter().take(4).map(|(_, n)| n.to_string()).collect(),
    }
}

/// Function definitions, branch keywords, boolean operators and ternaries,
/// compiled once.
fn metric_patterns() -> &'static [Regex; 4] {
    static PATTERNS: OnceLock<[Regex; 4]> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        [
            r"(?m)^\s*(pub(\(crate\))?\s+)?(async\s+)?(def|fn|func|fun|function)\s+[\w.]+|(?m)^\s*(public|private|protected|static|internal)[\w\s<>\[\],]*\s\w+\s*\([^;]*\)\s*(throws [\w, ]+)?\s*\{?\s*$|=>\s*\{",
            r"\b(if|elif|elsif|else if|for|foreach|while|until|case|when|catch|except|unless|guard)\b",
            r"&&|\|\||\band\b|\bor\b",
            r"\?[^?:.\n]+:",
        ]
        .map(|p| Regex::new(p).expect("valid metric pattern"))
    })
}

fn index_of(language: &str) -> usize {
    LANGUAGES
        .iter()
        .position(|l| *l == language)
        .expect("signal for a known language")
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Input of [`code_metrics`].
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct CodeMetricsParams {
    /// The source code.
    pub code: String,
    /// Its language, if known (improves comment detection); detected otherwise.
    #[serde(default)]
    pub language: Option<String>,
}

/// Size and complexity of a piece of code.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct CodeMetrics {
    /// Language used for the comment rules.
    pub language: String,
    /// All lines.
    pub lines: usize,
    /// Lines holding code.
    pub code_lines: usize,
    /// Lines holding only a comment.
    pub comment_lines: usize,
    /// Empty or whitespace-only lines.
    pub blank_lines: usize,
    /// Function or method definitions found.
    pub functions: usize,
    /// McCabe cyclomatic complexity of the whole text: 1 + decision points
    /// (branches, loops, case labels, `&&`/`||`, `?:`, `catch`).
    pub cyclomatic_complexity: usize,
    /// Deepest nesting of blocks (braces, or indentation for Python).
    pub max_nesting: usize,
    /// Longest line in characters.
    pub longest_line: usize,
}

/// What a line of source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineKind {
    Blank,
    Comment,
    Code,
}

/// Each line of `code` with its kind, by the comment syntax of `language`
/// (`//` and `/* */` everywhere, `#` for python, ruby and shell, `--` for
/// sql). A line that starts a comment counts as one.
pub(crate) fn line_kinds<'a>(code: &'a str, language: &str) -> Vec<(LineKind, &'a str)> {
    let hash_comments = matches!(language, "python" | "ruby" | "shell");
    let mut in_block_comment = false;
    code.lines()
        .map(|line| {
            let t = line.trim();
            let kind = if t.is_empty() {
                LineKind::Blank
            } else if in_block_comment || t.starts_with("/*") {
                in_block_comment = !t.contains("*/");
                LineKind::Comment
            } else if t.starts_with("//")
                || (hash_comments && t.starts_with('#') && !t.starts_with("#!"))
                || (language == "sql" && t.starts_with("--"))
            {
                LineKind::Comment
            } else {
                LineKind::Code
            };
            (kind, line)
        })
        .collect()
}

/// Counts lines, functions, decision points and nesting.
pub fn code_metrics(params: &CodeMetricsParams) -> CodeMetrics {
    let code = params.code.as_str();
    let language = params
        .language
        .clone()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.to_lowercase())
        .unwrap_or_else(|| {
            detect_language(&DetectLanguageParams {
                code: code.to_string(),
            })
            .language
        });
    let mut lines = 0;
    let mut code_lines = 0;
    let mut comment_lines = 0;
    let mut blank_lines = 0;
    let mut longest_line = 0;
    for (kind, line) in line_kinds(code, &language) {
        lines += 1;
        longest_line = longest_line.max(line.chars().count());
        match kind {
            LineKind::Blank => blank_lines += 1,
            LineKind::Comment => comment_lines += 1,
            LineKind::Code => code_lines += 1,
        }
    }
    let [functions, branches, booleans, ternaries] =
        metric_patterns().each_ref().map(|re| re.find_iter(code).count());
    let decisions = branches + booleans + ternaries;
    let max_nesting = if language == "python" {
        let indents: Vec<usize> = code
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.len() - l.trim_start().len())
            .collect();
        let unit = indents.iter().copied().filter(|&i| i > 0).min().unwrap_or(4);
        indents.iter().map(|i| i / unit).max().unwrap_or(0)
    } else {
        let mut depth = 0usize;
        let mut max = 0usize;
        for ch in code.chars() {
            match ch {
                '{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        max
    };
    CodeMetrics {
        language,
        lines,
        code_lines,
        comment_lines,
        blank_lines,
        functions,
        cyclomatic_complexity: 1 + decisions,
        max_nesting,
        longest_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang(code: &str) -> String {
        detect_language(&DetectLanguageParams { code: code.into() }).language
    }

    #[test]
    fn every_signal_compiles() {
        assert_eq!(signals().len(), SIGNALS.len());
    }

    #[test]
    fn recognises_each_language_from_a_typical_snippet() {
        let cases = [
            (
                "python",
                "import os\n\ndef total(items):\n    \"\"\"Sum.\"\"\"\n    if not items:\n        return None\n    return sum(x for x in items)\n",
            ),
            (
                "rust",
                "use std::collections::HashMap;\n\nfn count(words: &[&str]) -> HashMap<&str, usize> {\n    let mut m = HashMap::new();\n    for w in words { *m.entry(*w).or_insert(0) += 1; }\n    m\n}\n",
            ),
            (
                "go",
                "package main\n\nimport \"fmt\"\n\nfunc main() {\n    xs := []int{1, 2, 3}\n    for _, x := range xs {\n        fmt.Println(x)\n    }\n}\n",
            ),
            (
                "java",
                "import java.util.*;\n\nclass Solution {\n    public boolean isEmpty(List<Integer> xs) {\n        return xs.size() == 0;\n    }\n}\n",
            ),
            (
                "csharp",
                "using System;\n\nnamespace Demo\n{\n    public class Person\n    {\n        public string Name { get; set; }\n        static void Main() { Console.WriteLine(\"hi\"); }\n    }\n}\n",
            ),
            (
                "cpp",
                "#include <vector>\n#include <iostream>\nusing namespace std;\nint main() {\n    vector<int> v = {1, 2};\n    cout << v.size() << endl;\n}\n",
            ),
            (
                "c",
                "#include <stdio.h>\n#include <stdlib.h>\n\nint main(void) {\n    char *buf = malloc(16);\n    printf(\"%d\\n\", 42);\n    free(buf);\n    return 0;\n}\n",
            ),
            (
                "javascript",
                "const add = (a, b) => a + b;\nfunction greet(name) {\n  console.log(`hi ${name}`);\n  return name === undefined ? null : name;\n}\nmodule.exports = { add };\n",
            ),
            (
                "typescript",
                "interface User {\n  name: string;\n  age: number;\n}\nexport function greet(u: User): string {\n  return `hi ${u.name}`;\n}\n",
            ),
            (
                "php",
                "<?php\nclass Cart {\n    private $items = array();\n    public function add($item) {\n        $this->items[] = $item;\n    }\n}\n",
            ),
            (
                "ruby",
                "require 'json'\n\nclass Greeter\n  attr_reader :name\n  def greet\n    [1, 2].each do |i|\n      puts \"hi #{name}\"\n    end\n  end\nend\n",
            ),
            (
                "swift",
                "import Foundation\n\nfunc greet(_ name: String) -> String {\n    guard !name.isEmpty else { return \"\" }\n    return \"Hello, \\(name)\"\n}\nlet x: Int = 3\n",
            ),
            (
                "kotlin",
                "data class User(val name: String)\n\nfun main() {\n    val users = listOf(User(\"a\"))\n    for (u in users) println(u.name)\n    when (users.size) { 0 -> println(\"none\") else -> println(\"some\") }\n}\n",
            ),
            (
                "shell",
                "#!/bin/bash\nset -e\nfor f in *.txt; do\n  if [ -s \"$f\" ]; then\n    echo \"$f\" | grep -q foo && echo found\n  fi\ndone\n",
            ),
            (
                "sql",
                "SELECT c.name, COUNT(o.id) AS orders\nFROM customers c\nLEFT JOIN orders o ON o.customer_id = c.id\nWHERE c.active = 1\nGROUP BY c.name\nORDER BY orders DESC;\n",
            ),
        ];
        for (want, code) in cases {
            let d = detect_language(&DetectLanguageParams { code: code.into() });
            assert_eq!(d.language, want, "{code}\n{d:?}");
            assert!(d.confidence > 0.5, "{want}: {d:?}");
            assert!(!d.evidence.is_empty());
        }
    }

    #[test]
    fn prose_and_empty_text_are_unknown() {
        assert_eq!(lang(""), UNKNOWN);
        assert_eq!(lang("The quick brown fox jumps over the lazy dog."), UNKNOWN);
        assert_eq!(
            lang("Please review the attached invoice and pay within 30 days."),
            UNKNOWN
        );
        let d = detect_language(&DetectLanguageParams { code: "   ".into() });
        assert_eq!(d.confidence, 0.0);
    }

    #[test]
    fn metrics_count_lines_functions_and_branches() {
        let code = "// sum the positives\nfn sum(xs: &[i32]) -> i32 {\n    let mut t = 0;\n\n    for x in xs {\n        if *x > 0 && *x < 100 {\n            t += x;\n        }\n    }\n    t\n}\n";
        let m = code_metrics(&CodeMetricsParams {
            code: code.into(),
            language: None,
        });
        assert_eq!(m.language, "rust");
        assert_eq!(
            (m.lines, m.comment_lines, m.blank_lines, m.code_lines),
            (11, 1, 1, 9)
        );
        assert_eq!(m.functions, 1);
        assert_eq!(m.cyclomatic_complexity, 4); // 1 + for + if + &&
        assert_eq!(m.max_nesting, 3);
        let py = "def f(x):\n    # comment\n    if x:\n        return 1\n    return 2\n";
        let m = code_metrics(&CodeMetricsParams {
            code: py.into(),
            language: Some("Python".into()),
        });
        assert_eq!(
            (
                m.functions,
                m.comment_lines,
                m.cyclomatic_complexity,
                m.max_nesting
            ),
            (1, 1, 2, 2)
        );
        let empty = code_metrics(&CodeMetricsParams {
            code: String::new(),
            language: None,
        });
        assert_eq!(
            (empty.lines, empty.functions, empty.cyclomatic_complexity),
            (0, 0, 1)
        );
    }
}
