//! Shared by the model tests: the real models from the catalog, fetched
//! into the cache on first use.

#![allow(dead_code)]

use std::path::PathBuf;

use triage_models::{Catalog, MINILM, ModelStore, SMOLLM2};

pub fn smollm2_path() -> PathBuf {
    let catalog = Catalog::builtin();
    ModelStore::from_env()
        .ensure(catalog.get(SMOLLM2).unwrap())
        .expect("SmolLM2 must be fetchable (run `triage models pull`)")
        .main_file()
}

pub fn minilm_dir() -> PathBuf {
    let catalog = Catalog::builtin();
    ModelStore::from_env()
        .ensure(catalog.get(MINILM).unwrap())
        .expect("MiniLM must be fetchable (run `triage models pull`)")
        .dir
}

pub fn data(name: &str) -> Vec<serde_json::Value> {
    let path = format!("{}/../../tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}
