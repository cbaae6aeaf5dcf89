//! Prefix caching: the keys and values of recent prompts, kept so that a
//! request whose prompt starts the same way (a specialist's system prompt,
//! a document scored against several labels) only computes its own tokens.
//!
//! The KV state of a prefix does not depend on what follows it, and every
//! row of a forward pass is computed the same way whatever the pass holds,
//! so a reused prefix gives bit-identical results to computing it again.

use crate::llama::KvCache;

/// Most prompts kept.
const ENTRIES: usize = 8;
/// Most memory kept, in bytes (a 200-token prompt of SmolLM2-135M takes 4.6 MB).
const BUDGET: usize = 64 << 20;
/// Shorter shared prefixes are not worth a copy.
const MIN_REUSE: usize = 8;

/// Recently computed prompts, most recent last.
#[derive(Debug, Default)]
pub struct PrefixCache {
    entries: Vec<KvCache>,
}

impl PrefixCache {
    /// Prepares `cache` to run `prompt`: keeps or restores the longest
    /// known prefix of it (never the whole prompt: its last token must run
    /// to give logits) and returns how many tokens are already there.
    pub fn restore(&mut self, cache: &mut KvCache, prompt: &[u32]) -> usize {
        let limit = prompt.len().saturating_sub(1);
        let in_place = common_prefix(cache.tokens(), prompt).min(limit);
        let best = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(e.tokens(), prompt).min(limit)))
            .max_by_key(|&(i, n)| (n, i));
        match best {
            Some((i, n)) if n > in_place && n >= MIN_REUSE => {
                cache.copy_prefix(&self.entries[i], n);
                // Most recently used last.
                let e = self.entries.remove(i);
                self.entries.push(e);
                n
            }
            _ => {
                cache.truncate(in_place);
                in_place
            }
        }
    }

    /// Remembers the first `len` tokens of `cache` (a prompt just run),
    /// unless an entry already holds them.
    pub fn store(&mut self, cache: &KvCache, len: usize) {
        // Too short to be worth a copy, or too large to keep.
        if len < MIN_REUSE || cache.bytes() / cache.len().max(1) * len > BUDGET {
            return;
        }
        let tokens = &cache.tokens()[..len.min(cache.len())];
        if let Some(i) = self.entries.iter().position(|e| e.tokens().starts_with(tokens)) {
            let e = self.entries.remove(i);
            self.entries.push(e);
            return;
        }
        // A stored entry that this prompt extends is replaced by it.
        self.entries.retain(|e| !tokens.starts_with(e.tokens()));
        let mut entry = KvCache::default();
        entry.copy_prefix(cache, len);
        self.entries.push(entry);
        while self.entries.len() > ENTRIES || self.bytes() > BUDGET {
            self.entries.remove(0);
        }
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Memory held, in bytes.
    fn bytes(&self) -> usize {
        self.entries.iter().map(KvCache::bytes).sum()
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
