//! The GPT-2 style byte-level BPE tokenizer, built from a GGUF file's own
//! vocabulary and merges.
//!
//! candle's `TokenizerFromGguf` adds a prefix space and gets SmolLM2 wrong;
//! this one reproduces the model's original `tokenizer.json`: digits split
//! one per token, then byte-level pre-tokenization without a prefix space,
//! and the control tokens (`<|im_start|>`, ...) registered as special so
//! they are matched whole in text.

use std::collections::HashMap;

use candle_core::quantized::gguf_file;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, models::bpe::BPE};

use crate::Error;

/// GGUF token type of control tokens (llama.cpp's `LLAMA_TOKEN_TYPE_CONTROL`).
const TOKEN_TYPE_CONTROL: i32 = 3;
/// GGUF token type of user-defined tokens.
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// A tokenizer for one model: text to ids and ids back to bytes.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    /// Parses special tokens in the text (`<|im_end|>` becomes one id).
    parsing: tokenizers::Tokenizer,
    /// Treats special-token text as plain text.
    literal: tokenizers::Tokenizer,
    /// Raw bytes of each token (empty for special tokens).
    bytes: Vec<Vec<u8>>,
    special: Vec<bool>,
    /// Ids that end generation.
    pub eos_ids: Vec<u32>,
    /// Beginning-of-sequence id and whether the model wants it prepended.
    pub bos: Option<(u32, bool)>,
}

impl Tokenizer {
    /// Builds the tokenizer from GGUF metadata (`tokenizer.ggml.*`).
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Tokenizer, Error> {
        let md = |key: &str| {
            content
                .metadata
                .get(key)
                .ok_or_else(|| Error::Tokenizer(format!("the GGUF has no `{key}`")))
        };
        let model = md("tokenizer.ggml.model")?.to_string()?.clone();
        if model != "gpt2" {
            return Err(Error::Tokenizer(format!(
                "tokenizer type `{model}` is not supported (only byte-level BPE, `gpt2`)"
            )));
        }
        let tokens: Vec<String> = md("tokenizer.ggml.tokens")?
            .to_vec()?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<Result<_, _>>()?;
        let merges: Vec<(String, String)> = md("tokenizer.ggml.merges")?
            .to_vec()?
            .iter()
            .map(|v| {
                let m = v.to_string()?;
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| candle_core::Error::Msg(format!("malformed merge `{m}`")))
            })
            .collect::<Result<_, _>>()?;
        let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v.to_vec()?.iter().map(|t| t.to_i32()).collect::<Result<_, _>>()?,
            None => vec![1; tokens.len()],
        };
        let get_u32 = |key: &str| content.metadata.get(key).and_then(|v| v.to_u32().ok());
        let add_bos = content
            .metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        let bos = get_u32("tokenizer.ggml.bos_token_id").map(|id| (id, add_bos));
        let mut eos_ids: Vec<u32> = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
            .iter()
            .filter_map(|k| get_u32(k))
            .collect();
        // ChatML models end a turn with <|im_end|> even when the GGUF names
        // <|endoftext|> as eos; llama.cpp treats both as end of generation.
        for name in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"] {
            if let Some(id) = tokens.iter().position(|t| t == name) {
                eos_ids.push(id as u32);
            }
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();
        Self::build(tokens, merges, &types, eos_ids, bos)
    }

    fn build(
        tokens: Vec<String>,
        merges: Vec<(String, String)>,
        types: &[i32],
        eos_ids: Vec<u32>,
        bos: Option<(u32, bool)>,
    ) -> Result<Tokenizer, Error> {
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(Error::tokenizer)?;
        let mut parsing = tokenizers::Tokenizer::new(bpe);
        parsing.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        parsing.with_decoder(Some(ByteLevel::default()));
        let special: Vec<bool> = (0..tokens.len())
            .map(|i| matches!(types.get(i), Some(&TOKEN_TYPE_CONTROL)))
            .collect();
        let added: Vec<AddedToken> = tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                matches!(
                    types.get(*i),
                    Some(&TOKEN_TYPE_CONTROL | &TOKEN_TYPE_USER_DEFINED)
                )
            })
            .map(|(_, t)| AddedToken::from(t.clone(), true))
            .collect();
        parsing.add_special_tokens(added).map_err(Error::tokenizer)?;
        let mut literal = parsing.clone();
        literal.set_encode_special_tokens(true);
        let unicode_to_byte = unicode_to_byte();
        let bytes = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if special[i] {
                    Vec::new()
                } else {
                    // A token outside the byte alphabet (none in GPT-2 vocabularies) is kept as UTF-8.
                    t.chars()
                        .flat_map(|c| match unicode_to_byte.get(&c) {
                            Some(&b) => vec![b],
                            None => c.to_string().into_bytes(),
                        })
                        .collect()
                }
            })
            .collect();
        Ok(Tokenizer {
            parsing,
            literal,
            bytes,
            special,
            eos_ids,
            bos,
        })
    }

    /// Text to token ids. With `parse_special`, special-token text such as
    /// `<|im_start|>` becomes its single id (llama.cpp's default); without,
    /// it is tokenized as ordinary characters. No BOS is added here.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, Error> {
        let tok = if parse_special {
            &self.parsing
        } else {
            &self.literal
        };
        let enc = tok.encode_fast(text, false).map_err(Error::tokenizer)?;
        Ok(enc.get_ids().to_vec())
    }

    /// The raw bytes a token stands for (empty for special tokens). Bytes of
    /// consecutive tokens may split a multi-byte character: join them with
    /// [`crate::Utf8Stream`].
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether `id` is a control token.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Ids to text, special tokens skipped, invalid UTF-8 replaced.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| self.token_bytes(id).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The token's text as the vocabulary spells it (`Ġworld`).
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.parsing.id_to_token(id)
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }
}

/// GPT-2's reversible byte-to-unicode table, inverted: the printable
/// characters the vocabulary uses back to the bytes they stand for.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~')).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut map = HashMap::with_capacity(256);
    let mut next = 0u32;
    for b in 0u32..=255 {
        let c = if printable.contains(&b) {
            b
        } else {
            next += 1;
            255 + next
        };
        map.insert(char::from_u32(c).expect("valid code point"), b as u8);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_with_gpt2_spellings() {
        let map = unicode_to_byte();
        assert_eq!(map.len(), 256);
        assert_eq!(map[&'Ġ'], b' ');
        assert_eq!(map[&'Ċ'], b'\n');
        assert_eq!(map[&'A'], b'A');
        let mut bytes: Vec<u8> = map.values().copied().collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
    }
}
