//! Embeddings cached on disk, keyed by the encoder (one file per encoder,
//! named by its hash) and the sha256 of each text, so a restart does not
//! embed the same examples again (the router's example requests, the label
//! tools' labelled examples).
//!
//! The file is rewritten whole (to a temporary file, then renamed), so a
//! reader in another process sees the old or the new cache, never half of
//! one. A file that cannot be read is ignored and rebuilt: it is a cache.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{EmbedHandle, Error};

const MAGIC: &[u8; 8] = b"TRGEMB01";

/// Embeddings by text hash, backed by one file.
#[derive(Debug)]
pub struct EmbeddingCache {
    path: Option<PathBuf>,
    entries: HashMap<[u8; 32], Vec<f32>>,
    /// Texts embedded by the last [`EmbeddingCache::embed`] call.
    pub last_misses: usize,
}

impl EmbeddingCache {
    /// The cache file of an encoder under `home`: `encoder_id` names the
    /// encoder's weights (for instance with a hash of its files' hashes).
    pub fn path_in(home: &Path, encoder_id: &str) -> PathBuf {
        home.join("cache")
            .join("embeddings")
            .join(format!("{encoder_id}.bin"))
    }

    /// The cache in `path`, empty when the file is missing or unreadable.
    pub fn open(path: &Path) -> EmbeddingCache {
        let entries = match std::fs::read(path) {
            Ok(bytes) => decode(&bytes).unwrap_or_else(|| {
                tracing::warn!("ignoring the unreadable embedding cache {}", path.display());
                HashMap::new()
            }),
            Err(_) => HashMap::new(),
        };
        EmbeddingCache {
            path: Some(path.to_path_buf()),
            entries,
            last_misses: 0,
        }
    }

    /// A cache that lives only in memory.
    pub fn in_memory() -> EmbeddingCache {
        EmbeddingCache {
            path: None,
            entries: HashMap::new(),
            last_misses: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The embedding of each text: from the cache, or computed in one call
    /// for those missing and then saved.
    pub async fn embed(&mut self, embedder: &EmbedHandle, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        let keys: Vec<[u8; 32]> = texts
            .iter()
            .map(|t| Sha256::digest(t.as_bytes()).into())
            .collect();
        let mut missing: Vec<usize> = (0..texts.len())
            .filter(|&i| !self.entries.contains_key(&keys[i]))
            .collect();
        missing.dedup_by_key(|i| keys[*i]);
        self.last_misses = missing.len();
        if !missing.is_empty() {
            let vectors = embedder
                .embed(missing.iter().map(|&i| texts[i].clone()).collect())
                .await?;
            for (&i, v) in missing.iter().zip(vectors) {
                self.entries.insert(keys[i], v);
            }
            if let Err(e) = self.save() {
                tracing::warn!("could not save the embedding cache: {e}");
            }
        }
        Ok(keys.iter().map(|k| self.entries[k].clone()).collect())
    }

    fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&encode(&self.entries))?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

fn encode(entries: &HashMap<[u8; 32], Vec<f32>>) -> Vec<u8> {
    let dim = entries.values().next().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(16 + entries.len() * (32 + dim * 4));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(dim as u32).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    let mut keys: Vec<&[u8; 32]> = entries.keys().collect();
    keys.sort_unstable();
    for k in keys {
        out.extend_from_slice(k);
        for x in &entries[k] {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

fn decode(bytes: &[u8]) -> Option<HashMap<[u8; 32], Vec<f32>>> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let dim = u32::from_le_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
    let count = u32::from_le_bytes(rest.get(4..8)?.try_into().ok()?) as usize;
    let body = &rest[8..];
    let stride = 32 + dim * 4;
    if body.len() != count.checked_mul(stride)? {
        return None;
    }
    Some(
        body.chunks_exact(stride)
            .map(|c| {
                let key: [u8; 32] = c[..32].try_into().expect("32 bytes");
                let v = c[32..]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect();
                (key, v)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_a_round_trip_and_damage_is_detected() {
        let mut entries = HashMap::new();
        entries.insert([1u8; 32], vec![0.5f32, -1.0, 2.25]);
        entries.insert([2u8; 32], vec![0.0f32, 1.0, 3.0]);
        let bytes = encode(&entries);
        assert_eq!(decode(&bytes).unwrap(), entries);
        assert!(decode(&bytes[..bytes.len() - 1]).is_none(), "truncated");
        assert!(decode(b"not a cache").is_none());
    }
}
