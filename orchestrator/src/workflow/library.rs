//! The workflows a gateway offers by name: the shipped specs (built into
//! the binary, so an installed `triage` has them), or every `*.yaml` in a
//! folder the user names.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::plan::{Agents, Plan, SpecErrors};

/// The shipped specs, by file.
const BUILTIN: &[(&str, &str)] = &[
    (
        "specs/workflows/code-review.yaml",
        include_str!("../../../specs/workflows/code-review.yaml"),
    ),
    (
        "specs/workflows/contract-review.yaml",
        include_str!("../../../specs/workflows/contract-review.yaml"),
    ),
    (
        "specs/workflows/earnings-call.yaml",
        include_str!("../../../specs/workflows/earnings-call.yaml"),
    ),
];

/// A workflow spec file and what validating it gave.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name clients use: the spec's `name`, or the file's stem when it
    /// does not validate.
    pub name: String,
    pub path: PathBuf,
    pub source: String,
    pub plan: Result<Plan, SpecErrors>,
}

/// The workflows in `dir`, or the shipped ones; each validated against
/// `agents`. A spec that does not validate stays listed with its errors,
/// so asking for it says what is wrong with it.
pub fn load(dir: Option<&Path>, agents: &Agents) -> anyhow::Result<Vec<Entry>> {
    let files: Vec<(PathBuf, String)> = match dir {
        None => BUILTIN
            .iter()
            .map(|(p, s)| (PathBuf::from(p), (*s).to_string()))
            .collect(),
        Some(dir) => {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("cannot read the workflow folder {}", dir.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            paths.sort();
            let mut files = Vec::with_capacity(paths.len());
            for p in paths {
                let source =
                    std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
                files.push((p, source));
            }
            files
        }
    };
    let mut entries: Vec<Entry> = files
        .into_iter()
        .map(|(path, source)| {
            let plan = Plan::parse(&path, &source, agents);
            let name = match &plan {
                Ok(p) => p.name.clone(),
                Err(_) => path
                    .file_stem()
                    .map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
            };
            Entry {
                name,
                path,
                source,
                plan,
            }
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(pair) = entries.windows(2).find(|w| w[0].name == w[1].name) {
        anyhow::bail!(
            "two workflow specs are called `{}`: {} and {}; rename one",
            pair[0].name,
            pair[0].path.display(),
            pair[1].path.display()
        );
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_list_is_every_shipped_spec() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/workflows");
        let mut shipped: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| format!("specs/workflows/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        shipped.sort();
        let built_in: Vec<String> = BUILTIN.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(built_in, shipped, "add new specs to BUILTIN");
    }
}
