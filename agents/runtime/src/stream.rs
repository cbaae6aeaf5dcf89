//! Streaming detokenization, done once and correctly: bytes of tokens are
//! joined until they form whole UTF-8 characters, and text that may be the
//! start of a stop sequence is held back until it is known not to be one.

/// Joins token bytes into text, releasing only complete UTF-8 characters.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds a token's bytes and returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).expect("checked prefix"));
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Bytes that can never be valid: replace them, go on.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: an unfinished character becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Watches generated text for stop sequences.
#[derive(Debug)]
pub(crate) struct StopMatcher {
    stops: Vec<String>,
    /// Text not yet released because it may begin a stop sequence.
    held: String,
}

/// What to do after new text arrived.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StopCheck {
    /// Release this text and go on.
    Continue(String),
    /// A stop sequence was completed: release this text (everything before
    /// the stop sequence) and end.
    Stop(String),
}

impl StopMatcher {
    pub(crate) fn new(stops: Vec<String>) -> StopMatcher {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> StopCheck {
        self.held.push_str(text);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let out = self.held[..at].to_string();
            self.held.clear();
            return StopCheck::Stop(out);
        }
        // Hold back the longest suffix that is a prefix of some stop sequence.
        let keep_from = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let out = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        StopCheck::Continue(out)
    }

    /// Releases whatever is held at the end of generation.
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_byte_characters_split_across_tokens_come_out_whole() {
        let text = "né 🦀 日本";
        let bytes = text.as_bytes();
        let mut s = Utf8Stream::default();
        let mut out = String::new();
        for b in bytes {
            let piece = s.push(std::slice::from_ref(b));
            assert!(!piece.contains('\u{FFFD}'));
            out.push_str(&piece);
        }
        out.push_str(&s.finish());
        assert_eq!(out, text);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters_without_stalling() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(&[b'a', 0xFF, b'b']), "a\u{FFFD}b");
        assert_eq!(s.push(&[0xE6, 0x97]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn stop_sequences_are_cut_and_partial_matches_held_back() {
        let mut m = StopMatcher::new(vec!["\nUser:".to_string()]);
        assert_eq!(m.push("Hello"), StopCheck::Continue("Hello".into()));
        assert_eq!(m.push(" there\nUs"), StopCheck::Continue(" there".into()));
        assert_eq!(m.push("ually"), StopCheck::Continue("\nUsually".into()));
        assert_eq!(m.push("\nUser: hi"), StopCheck::Stop(String::new()));
        let mut m = StopMatcher::new(vec!["END".to_string()]);
        assert_eq!(m.push("abcE"), StopCheck::Continue("abc".into()));
        assert_eq!(m.finish(), "E");
    }
}
