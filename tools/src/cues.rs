//! Weighted cue phrases: the lexical evidence a label classifier combines
//! with a model's judgement. Each label has patterns with weights; a label's
//! score is the sum over its patterns of `weight × √min(matches, 2)`, so a
//! phrase counts most the first time and a repeated one cannot swamp the
//! others.

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The lexical evidence for one label.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct LabelCues {
    pub label: String,
    /// Sum of the weights of the cues found (0 when none).
    pub score: f64,
    /// The phrases that matched, as written in the text (lower-cased).
    pub cues: Vec<String>,
}

impl LabelCues {
    /// A label with no cues found yet.
    pub(crate) fn new(label: &str) -> LabelCues {
        LabelCues {
            label: label.to_string(),
            score: 0.0,
            cues: Vec::new(),
        }
    }

    /// Adds a cue's weight; the phrase is listed once.
    pub(crate) fn add(&mut self, weight: f64, phrase: &str) {
        self.score += weight;
        if !self.cues.iter().any(|c| c == phrase) {
            self.cues.push(phrase.to_string());
        }
    }
}

/// Patterns per label, compiled once.
#[derive(Debug)]
pub(crate) struct CueSet {
    labels: Vec<(&'static str, Vec<(Regex, f64)>)>,
}

impl CueSet {
    /// Compiles `(label, [(pattern, weight)])`; patterns are matched
    /// against the lower-cased text.
    pub(crate) fn new(table: &[(&'static str, &[(&str, f64)])]) -> CueSet {
        let labels = table
            .iter()
            .map(|(label, cues)| {
                let compiled = cues
                    .iter()
                    .map(|(p, w)| (Regex::new(p).expect("valid cue pattern"), *w))
                    .collect();
                (*label, compiled)
            })
            .collect();
        CueSet { labels }
    }

    /// Scores every label on `text`, in table order.
    pub(crate) fn score(&self, text: &str) -> Vec<LabelCues> {
        let lower = text.to_lowercase();
        self.labels
            .iter()
            .map(|(label, cues)| {
                let mut found = LabelCues::new(label);
                for (re, weight) in cues {
                    let matches: Vec<&str> = re.find_iter(&lower).map(|m| m.as_str()).take(2).collect();
                    if matches.is_empty() {
                        continue;
                    }
                    found.add(weight * (matches.len() as f64).sqrt(), matches[0]);
                    for m in &matches[1..] {
                        found.add(0.0, m);
                    }
                }
                found
            })
            .collect()
    }
}
