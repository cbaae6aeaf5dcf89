//! Label classifiers: a sentence encoder's similarity to labelled examples
//! (`specs/labels/NAME.toml`, written for this project) combined with the
//! lexical cues of a deterministic tool (`triage_tools`).
//!
//! For each label `l` the classifier computes
//!
//! ```text
//! logit(l) = cue_weight × cues(l) + similarity_weight × sim(l) + bias(l)
//! ```
//!
//! where `cues(l)` is the summed weight of the label's cue phrases found in
//! the text and `sim(l)` the mean cosine similarity of the text's MiniLM
//! embedding to the label's `neighbours` nearest examples. The labels'
//! probabilities are the softmax of the logits, so each logit is the
//! label's log-likelihood under the combined model up to a constant, and
//! the **confidence** of a label tool is the probability of the label it
//! chose. `triage eval agents` shows on the dev sets that accuracy rises
//! with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use triage_runtime::{EmbedHandle, EmbeddingCache, cosine};
use triage_tools::cues::LabelCues;

use crate::SpecError;
use crate::spec::line_col;

/// One `specs/labels/NAME.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSet {
    pub name: String,
    pub description: String,
    pub combine: Combine,
    #[serde(rename = "label")]
    pub labels: Vec<LabelDef>,
}

/// How cues and similarity are weighed (see the module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Combine {
    pub cue_weight: f64,
    pub similarity_weight: f64,
    /// How many of a label's nearest examples are averaged.
    pub neighbours: usize,
    /// Added to a label's logit (for labels that are the absence of cues,
    /// such as `neutral`).
    #[serde(default)]
    pub bias: BTreeMap<String, f64>,
}

/// A label with what it means and examples of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelDef {
    pub name: String,
    pub description: String,
    pub examples: Vec<String>,
}

const BUILTIN: &[(&str, &str)] = &[
    (
        "clause-types",
        include_str!("../../../specs/labels/clause-types.toml"),
    ),
    ("sentiment", include_str!("../../../specs/labels/sentiment.toml")),
];

impl LabelSet {
    /// A label set shipped in `specs/labels/` (compiled in).
    pub fn builtin(name: &str) -> Option<LabelSet> {
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        let path = Path::new("specs/labels").join(format!("{name}.toml"));
        Some(
            LabelSet::parse(text, &path, cue_tool(name).map(|(_, l)| l))
                .expect("the shipped label sets are valid"),
        )
    }

    /// Validates label-set text; `path` names it in errors. When
    /// `expected` is given, the labels must be exactly those, in that
    /// order (the labels the matching cue tool reports).
    pub fn parse(text: &str, path: &Path, expected: Option<&[&str]>) -> Result<LabelSet, SpecError> {
        let invalid = |offset: Option<usize>, message: String| {
            let (line, column) = offset.map_or((1, 1), |o| line_col(text, o));
            SpecError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let set: LabelSet =
            toml::from_str(text).map_err(|e| invalid(e.span().map(|s| s.start), e.message().to_string()))?;
        if let Some(expected) = expected {
            let names: Vec<&str> = set.labels.iter().map(|l| l.name.as_str()).collect();
            if names != expected {
                return Err(invalid(
                    None,
                    format!(
                        "the labels must be, in this order: {}; found: {}",
                        expected.join(", "),
                        names.join(", ")
                    ),
                ));
            }
        }
        for l in &set.labels {
            if l.examples.iter().all(|e| e.trim().is_empty()) {
                return Err(invalid(
                    text.find(&format!("name = \"{}\"", l.name)),
                    format!("label `{}` needs at least one example", l.name),
                ));
            }
        }
        if let Some(unknown) = set
            .combine
            .bias
            .keys()
            .find(|k| !set.labels.iter().any(|l| &l.name == *k))
        {
            return Err(invalid(
                text.find("[combine"),
                format!("combine.bias names `{unknown}`, which is not a label of this set"),
            ));
        }
        if set.combine.neighbours == 0 {
            return Err(invalid(
                text.find("neighbours"),
                "combine.neighbours must be at least 1".into(),
            ));
        }
        Ok(set)
    }

    /// Reads and validates a label-set file.
    pub fn load(path: &Path, expected: Option<&[&str]>) -> Result<LabelSet, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: PathBuf::from(path),
            source,
        })?;
        LabelSet::parse(&text, path, expected)
    }
}

/// One label's share of a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LabelScore {
    pub label: String,
    /// Softmax of the combined logits: the confidence when this label wins.
    pub probability: f64,
    /// Mean cosine similarity to the label's nearest examples.
    pub similarity: f64,
    /// Summed weight of the label's cue phrases found in the text.
    pub cue_score: f64,
    /// The cue phrases found.
    pub cues: Vec<String>,
    /// The label's nearest examples, most similar first (only when asked
    /// for, see [`LabelClassifier::classify_explained`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nearest: Vec<Neighbour>,
}

/// An example and its cosine similarity to the classified text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Neighbour {
    pub example: String,
    pub similarity: f64,
}

/// A decision: the most probable label and every label's score, best
/// first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Decision {
    pub label: String,
    /// Probability of `label`, 0 to 1.
    pub confidence: f64,
    pub scores: Vec<LabelScore>,
}

/// A label set with its examples embedded, ready to classify.
#[derive(Debug, Clone)]
pub struct LabelClassifier {
    set: LabelSet,
    /// Embeddings of each label's examples, in label order.
    examples: Vec<Vec<Vec<f32>>>,
    embedder: EmbedHandle,
    cues: Option<CueFn>,
}

/// A deterministic tool that finds each label's cue phrases.
pub type CueFn = fn(&str) -> Vec<LabelCues>;

/// The cue tool for a shipped label set, with the labels it reports.
pub fn cue_tool(set: &str) -> Option<(CueFn, &'static [&'static str])> {
    match set {
        "sentiment" => Some((
            triage_tools::finance::sentiment_cues,
            &triage_tools::finance::SENTIMENTS,
        )),
        "clause-types" => Some((
            triage_tools::legal::clause_cues,
            &triage_tools::legal::CLAUSE_TYPES,
        )),
        _ => None,
    }
}

impl LabelClassifier {
    /// Embeds the set's examples with `embedder` (or takes them from
    /// `cache`); the set's cue tool (see [`cue_tool`]) supplies the lexical
    /// evidence.
    pub async fn new(
        set: LabelSet,
        embedder: EmbedHandle,
        cache: &mut EmbeddingCache,
    ) -> Result<LabelClassifier, triage_runtime::Error> {
        // One call for all the examples, then split back by label.
        let all: Vec<String> = set.labels.iter().flat_map(|l| l.examples.clone()).collect();
        let vectors = cache.embed(&embedder, &all).await?;
        let cues = cue_tool(&set.name).map(|(f, _)| f);
        Ok(LabelClassifier::from_vectors(set, vectors, embedder, cues))
    }

    /// A classifier whose examples are already embedded (`vectors` holds
    /// every label's examples in order, for instance from a cache), with
    /// `cues` as its lexical evidence.
    ///
    /// # Panics
    /// When `vectors` does not have one vector per example.
    pub fn from_vectors(
        set: LabelSet,
        vectors: Vec<Vec<f32>>,
        embedder: EmbedHandle,
        cues: Option<CueFn>,
    ) -> LabelClassifier {
        let total: usize = set.labels.iter().map(|l| l.examples.len()).sum();
        assert_eq!(vectors.len(), total, "one vector per example");
        let mut vectors = vectors.into_iter();
        let examples = set
            .labels
            .iter()
            .map(|l| vectors.by_ref().take(l.examples.len()).collect())
            .collect();
        LabelClassifier {
            set,
            examples,
            embedder,
            cues,
        }
    }

    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.set.labels.iter().map(|l| l.name.as_str())
    }

    pub fn set(&self) -> &LabelSet {
        &self.set
    }

    /// Classifies each text.
    pub async fn classify(&self, texts: Vec<String>) -> Result<Vec<Decision>, triage_runtime::Error> {
        self.classify_explained(texts, 0).await
    }

    /// Classifies each text, listing each label's `nearest` most similar
    /// examples with the scores.
    pub async fn classify_explained(
        &self,
        texts: Vec<String>,
        nearest: usize,
    ) -> Result<Vec<Decision>, triage_runtime::Error> {
        let cues: Vec<Vec<LabelCues>> = texts
            .iter()
            .map(|t| self.cues.map(|f| f(t)).unwrap_or_default())
            .collect();
        let vectors = self.embedder.embed(texts).await?;
        Ok(vectors
            .iter()
            .zip(cues)
            .map(|(v, c)| self.decide(v, c, nearest))
            .collect())
    }

    fn decide(&self, vector: &[f32], cues: Vec<LabelCues>, nearest: usize) -> Decision {
        let c = &self.set.combine;
        let mut scores: Vec<(f64, LabelScore)> = self
            .set
            .labels
            .iter()
            .zip(&self.examples)
            .map(|(label, examples)| {
                let mut sims: Vec<(f32, usize)> = examples
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (cosine(vector, e), i))
                    .collect();
                sims.sort_by(|a, b| b.0.total_cmp(&a.0));
                let k = c.neighbours.min(sims.len()).max(1);
                let similarity = f64::from(sims.iter().take(k).map(|s| s.0).sum::<f32>()) / k as f64;
                let found = cues.iter().find(|x| x.label == label.name);
                let cue_score = found.map_or(0.0, |x| x.score);
                let logit = c.cue_weight * cue_score
                    + c.similarity_weight * similarity
                    + c.bias.get(&label.name).copied().unwrap_or(0.0);
                (
                    logit,
                    LabelScore {
                        label: label.name.clone(),
                        probability: 0.0,
                        similarity: round3(similarity),
                        cue_score: round3(cue_score),
                        cues: found.map(|x| x.cues.clone()).unwrap_or_default(),
                        nearest: sims
                            .iter()
                            .take(nearest)
                            .map(|&(s, i)| Neighbour {
                                example: label.examples[i].clone(),
                                similarity: round3(f64::from(s)),
                            })
                            .collect(),
                    },
                )
            })
            .collect();
        let max = scores.iter().map(|(l, _)| *l).fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = scores.iter().map(|(l, _)| (l - max).exp()).sum();
        for (logit, s) in &mut scores {
            s.probability = (*logit - max).exp() / total;
        }
        let mut scores: Vec<LabelScore> = scores.into_iter().map(|(_, s)| s).collect();
        scores.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        for s in &mut scores {
            s.probability = round3(s.probability);
        }
        Decision {
            label: scores[0].label.clone(),
            confidence: scores[0].probability,
            scores,
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use triage_tools::finance::SENTIMENTS;
    use triage_tools::legal::CLAUSE_TYPES;

    #[test]
    fn the_shipped_sets_match_their_cue_tools() {
        for (name, labels) in [
            ("sentiment", &SENTIMENTS[..]),
            ("clause-types", &CLAUSE_TYPES[..]),
        ] {
            let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name).unwrap();
            let set = LabelSet::parse(text, Path::new(name), Some(labels)).unwrap();
            for l in &set.labels {
                assert!(l.examples.len() >= 6, "{name}/{}: {}", l.name, l.examples.len());
            }
        }
    }

    #[test]
    fn bad_label_sets_are_located() {
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == "sentiment").unwrap();
        let path = Path::new("sentiment.toml");
        let err = LabelSet::parse(&text.replace("neighbours", "neighbors"), path, None).unwrap_err();
        assert!(err.to_string().contains("unknown field `neighbors`"), "{err}");
        let err =
            LabelSet::parse(&text.replace("\"neutral\"", "\"meh\""), path, Some(&SENTIMENTS)).unwrap_err();
        assert!(
            err.to_string()
                .contains("must be, in this order: positive, negative, neutral"),
            "{err}"
        );
        let err =
            LabelSet::parse(&text.replace("bias = { neutral", "bias = { calm"), path, None).unwrap_err();
        assert!(err.to_string().contains("`calm`, which is not a label"), "{err}");
    }
}
