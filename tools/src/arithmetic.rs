//! Arithmetic in a model's answer, checked by code: every stated step
//! (`15 * 3 = 45`, `$20 x 35 = $700`, `2/3 - 2/5 = 1/2`) is recomputed, and
//! the final answer (`The answer is 32.`, or else the last number) is found
//! and traced back to the steps that derive it.
//!
//! A small model's reasoning is often fluent and wrong; its arithmetic is
//! where being wrong is cheapest to prove. The specialists fold this check
//! into the confidence of their answers, so the cascade escalates an answer
//! built on `45 * 3 = 140` however sure the model sounded.

use std::sync::OnceLock;

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One arithmetic statement found in the text and recomputed.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct ArithmeticStep {
    /// The statement as written (`15 * 3 = 45`).
    pub text: String,
    /// The value the text states.
    pub stated: f64,
    /// The value of the left-hand side, recomputed.
    pub computed: f64,
    /// Whether the stated value is the computed one, to the precision the
    /// text writes it with.
    pub correct: bool,
    /// Byte offsets of `text` in the input.
    pub start: usize,
    pub end: usize,
}

/// The number an answer settles on.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct FinalAnswer {
    /// The number as written (`1,200`).
    pub text: String,
    /// Its value.
    pub value: f64,
    /// Canonical form for comparing answers: no thousands separators, no
    /// trailing zeros (`"$1,200.00"` → `"1200"`).
    pub normalized: String,
    /// Stated as the answer (`The answer is …`, `Answer: …`, `#### …`)
    /// rather than merely the last number in the text.
    pub explicit: bool,
    /// Byte offsets of the number in the input.
    pub start: usize,
    pub end: usize,
}

/// Everything [`check_arithmetic`] found.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct ArithmeticReport {
    /// Every statement of the form `expression = number`, in order.
    pub steps: Vec<ArithmeticStep>,
    /// How many of them are wrong.
    pub wrong: usize,
    /// The final answer, if the text has a number at all.
    pub final_answer: Option<FinalAnswer>,
    /// Whether the final answer is the result of a correct step (none when
    /// there is no final answer or no step).
    pub derived: Option<bool>,
}

/// Recomputes every arithmetic step in `text` and finds its final answer.
pub fn check_arithmetic(text: &str) -> ArithmeticReport {
    let tokens = lex(text);
    let mut steps = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if t.kind == Kind::Eq
            && let Some(step) = step_at(text, &tokens, i)
        {
            steps.push(step);
        }
    }
    let wrong = steps.iter().filter(|s| !s.correct).count();
    let final_answer = final_answer(text);
    let derived = match &final_answer {
        Some(f) if !steps.is_empty() => Some(
            steps
                .iter()
                .any(|s| s.correct && close(s.computed, f.value, decimals(&f.text))),
        ),
        _ => None,
    };
    ArithmeticReport {
        steps,
        wrong,
        final_answer,
        derived,
    }
}

/// The number `text` settles on: the last one stated as the answer
/// (`the answer is 32`, `Answer: $1,200`, `#### 18`), or else the last
/// number in the text.
pub fn final_answer(text: &str) -> Option<FinalAnswer> {
    static EXPLICIT: OnceLock<Regex> = OnceLock::new();
    let re = EXPLICIT.get_or_init(|| {
        Regex::new(
            r"(?i)(?:\banswer\s*(?:is|:|=)|####)\s*(?:approximately\s+|about\s+|equal\s+to\s+)?[$€£]?\s*(-?\d[\d,]*(?:\.\d+)?)",
        )
        .expect("a valid pattern")
    });
    if let Some(m) = re.captures_iter(text).filter_map(|c| c.get(1)).last() {
        let (start, end) = trim_number(text, m.start(), m.end());
        return number_at(text, start, end, true);
    }
    let tokens = lex(text);
    let last = tokens.iter().rev().find(|t| t.kind == Kind::Num)?;
    // A minus sign written against the number (`is -7`, not `10-7`).
    let before = &text[..last.start];
    let negative = before.ends_with('-')
        && !before[..before.len() - 1]
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric);
    let start = if negative { last.start - 1 } else { last.start };
    number_at(text, start, last.end, false)
}

/// A number's span without a trailing thousands separator (`1,200,` in a
/// list).
fn trim_number(text: &str, start: usize, mut end: usize) -> (usize, usize) {
    while end > start && text[..end].ends_with(',') {
        end -= 1;
    }
    (start, end)
}

fn number_at(text: &str, start: usize, end: usize, explicit: bool) -> Option<FinalAnswer> {
    let written = &text[start..end];
    let value = parse_number(written)?;
    Some(FinalAnswer {
        text: written.to_string(),
        value,
        normalized: normalize(written),
        explicit,
        start,
        end,
    })
}

/// `"1,200.50"` → 1200.5.
fn parse_number(written: &str) -> Option<f64> {
    written.replace(',', "").parse().ok()
}

/// A written number in canonical form: `"-1,200.00"` → `"-1200"`,
/// `"4.50"` → `"4.5"`.
pub fn normalize(written: &str) -> String {
    let plain = written.replace(',', "");
    match plain.split_once('.') {
        Some((whole, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                whole.to_string()
            } else {
                format!("{whole}.{frac}")
            }
        }
        None => plain,
    }
}

/// Digits after the decimal point as written.
fn decimals(written: &str) -> usize {
    written.split_once('.').map_or(0, |(_, f)| f.len())
}

/// Whether `computed` rounds to `stated` at the precision written (half a
/// unit in the last place), with a little room for float error.
fn close(computed: f64, stated: f64, decimals: usize) -> bool {
    let unit = 10f64.powi(-(decimals.min(12) as i32));
    (computed - stated).abs() <= unit / 2.0 + 1e-9 * computed.abs().max(1.0)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A number; `percent` when written with `%`.
    Num,
    Op(char),
    Open,
    Close,
    Eq,
    /// A word: ends an expression unless it is a unit (`25 cups + 5 cups`).
    Word,
    /// Anything else that ends an expression: punctuation, a line break.
    Break,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    value: f64,
    percent: bool,
    start: usize,
    end: usize,
}

fn lex(text: &str) -> Vec<Token> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let push = |tokens: &mut Vec<Token>, kind, start, end| {
        tokens.push(Token {
            kind,
            value: 0.0,
            percent: false,
            start,
            end,
        })
    };
    while i < text.len() {
        let c = text[i..].chars().next().expect("in bounds");
        let len = c.len_utf8();
        match c {
            '0'..='9' => {
                let start = i;
                let mut j = i;
                loop {
                    while j < bytes.len() && bytes[j].is_ascii_digit() {
                        j += 1;
                    }
                    // A thousands separator: a comma before exactly three
                    // digits.
                    let three = |k: usize| {
                        k + 3 <= bytes.len()
                            && bytes[k..k + 3].iter().all(u8::is_ascii_digit)
                            && bytes.get(k + 3).is_none_or(|b| !b.is_ascii_digit())
                    };
                    if j < bytes.len() && bytes[j] == b',' && three(j + 1) {
                        j += 1;
                        continue;
                    }
                    break;
                }
                if j + 1 < bytes.len() && bytes[j] == b'.' && bytes[j + 1].is_ascii_digit() {
                    j += 1;
                    while j < bytes.len() && bytes[j].is_ascii_digit() {
                        j += 1;
                    }
                }
                let value = parse_number(&text[start..j]).unwrap_or(f64::NAN);
                let percent = bytes.get(j) == Some(&b'%');
                tokens.push(Token {
                    kind: Kind::Num,
                    value,
                    percent,
                    start,
                    end: j,
                });
                i = if percent { j + 1 } else { j };
                continue;
            }
            '+' | '*' | '/' => push(&mut tokens, Kind::Op(c), i, i + len),
            '-' | '−' | '–' => push(&mut tokens, Kind::Op('-'), i, i + len),
            '×' | '·' => push(&mut tokens, Kind::Op('*'), i, i + len),
            '÷' => push(&mut tokens, Kind::Op('/'), i, i + len),
            '(' => push(&mut tokens, Kind::Open, i, i + len),
            ')' => push(&mut tokens, Kind::Close, i, i + len),
            '=' => push(&mut tokens, Kind::Eq, i, i + len),
            // Currency signs and spaces neither make nor end an expression.
            '$' | '€' | '£' | ' ' | '\t' => {}
            c if c.is_alphabetic() => {
                let start = i;
                let mut j = i;
                while let Some(c) = text[j..].chars().next().filter(|c| c.is_alphanumeric()) {
                    j += c.len_utf8();
                }
                let word = &text[start..j];
                // `3 x 4`: a lone x between numbers multiplies.
                let kind = if word == "x" || word == "X" {
                    Kind::Op('*')
                } else {
                    Kind::Word
                };
                push(&mut tokens, kind, start, j);
                i = j;
                continue;
            }
            _ => push(&mut tokens, Kind::Break, i, i + len),
        }
        i += len;
    }
    drop_units(tokens)
}

/// Removes units written between a number and an operator or `=`
/// (`25 cups + 5 cups = 30`, `25 (lollipops) + 5 = 30`): one or two words,
/// bracketed or not.
fn drop_units(tokens: Vec<Token>) -> Vec<Token> {
    let mut kept = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        kept.push(tokens[i]);
        if tokens[i].kind == Kind::Num {
            let mut j = i + 1;
            let open = tokens.get(j).is_some_and(|t| t.kind == Kind::Open);
            if open {
                j += 1;
            }
            let words = tokens[j.min(tokens.len())..]
                .iter()
                .take_while(|t| t.kind == Kind::Word)
                .count();
            j += words;
            if open && tokens.get(j).is_some_and(|t| t.kind == Kind::Close) {
                j += 1;
            }
            let balanced = !open || tokens[j - 1].kind == Kind::Close;
            if (1..=2).contains(&words)
                && balanced
                && tokens
                    .get(j)
                    .is_some_and(|t| matches!(t.kind, Kind::Op(_) | Kind::Eq))
            {
                i = j;
                continue;
            }
        }
        i += 1;
    }
    kept
}

/// The step whose `=` is `tokens[eq]`, if a checkable expression stands
/// on its left and a number on its right.
fn step_at(text: &str, tokens: &[Token], eq: usize) -> Option<ArithmeticStep> {
    let mut first = eq;
    while first > 0
        && matches!(
            tokens[first - 1].kind,
            Kind::Num | Kind::Op(_) | Kind::Open | Kind::Close
        )
    {
        first -= 1;
    }
    // An expression starts with a number, a bracket or a minus sign.
    while first < eq && matches!(tokens[first].kind, Kind::Op(op) if op != '-') {
        first += 1;
    }
    let lhs = &tokens[first..eq];
    if lhs.iter().any(|t| t.percent)
        || !lhs.iter().any(|t| matches!(t.kind, Kind::Op(_)))
        || lhs.iter().filter(|t| t.kind == Kind::Num).count() < 2
    {
        return None;
    }
    let (stated, decimals, end) = rhs(text, &tokens[eq + 1..])?;
    let mut parser = Parser { tokens: lhs, at: 0 };
    let computed = parser.expr()?;
    if parser.at != lhs.len() || !computed.is_finite() {
        return None;
    }
    let correct = match decimals {
        Some(d) => close(computed, stated, d),
        None => (computed - stated).abs() <= 1e-6 * computed.abs().max(1.0),
    };
    let start = lhs[0].start;
    Some(ArithmeticStep {
        text: text[start..end].to_string(),
        stated,
        computed,
        correct,
        start,
        end,
    })
}

/// The stated value right of `=`: a number, a negative number, or a
/// fraction `a/b` (compared exactly, so its precision is `None`). Returns
/// the value, its written precision and where it ends.
fn rhs(text: &str, after: &[Token]) -> Option<(f64, Option<usize>, usize)> {
    let (negative, rest) = match after.first()?.kind {
        Kind::Op('-') => (true, &after[1..]),
        _ => (false, after),
    };
    let n = rest.first().filter(|t| t.kind == Kind::Num && !t.percent)?;
    let sign = if negative { -1.0 } else { 1.0 };
    // A fraction ends the statement: `= 1/2.`, not `= 12 / 4 * 2`.
    if let [_, slash, d, tail @ ..] = rest
        && slash.kind == Kind::Op('/')
        && d.kind == Kind::Num
        && !d.percent
        && d.value != 0.0
        && tail
            .first()
            .is_none_or(|t| matches!(t.kind, Kind::Break | Kind::Word | Kind::Eq))
    {
        return Some((sign * n.value / d.value, None, d.end));
    }
    // `= 6 * 4 = 24`: the 6 is stated here and starts the next step.
    Some((sign * n.value, Some(decimals(&text[n.start..n.end])), n.end))
}

/// Recursive descent over an expression's tokens: `+ -` below `* /`,
/// unary minus, brackets.
struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<Kind> {
        self.tokens.get(self.at).map(|t| t.kind)
    }

    fn expr(&mut self) -> Option<f64> {
        let mut v = self.term()?;
        while let Some(Kind::Op(op @ ('+' | '-'))) = self.peek() {
            self.at += 1;
            let r = self.term()?;
            v = if op == '+' { v + r } else { v - r };
        }
        Some(v)
    }

    fn term(&mut self) -> Option<f64> {
        let mut v = self.factor()?;
        while let Some(Kind::Op(op @ ('*' | '/'))) = self.peek() {
            self.at += 1;
            let r = self.factor()?;
            v = if op == '*' {
                v * r
            } else if r == 0.0 {
                return None;
            } else {
                v / r
            };
        }
        Some(v)
    }

    fn factor(&mut self) -> Option<f64> {
        match self.peek()? {
            Kind::Op('-') => {
                self.at += 1;
                Some(-self.factor()?)
            }
            Kind::Num => {
                self.at += 1;
                Some(self.tokens[self.at - 1].value)
            }
            Kind::Open => {
                self.at += 1;
                let v = self.expr()?;
                (self.peek()? == Kind::Close).then(|| self.at += 1)?;
                Some(v)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(text: &str) -> Vec<(String, bool)> {
        check_arithmetic(text)
            .steps
            .into_iter()
            .map(|s| (s.text, s.correct))
            .collect()
    }

    #[test]
    fn right_and_wrong_steps_are_told_apart() {
        let text = "15 cups of feed is 15 * 3 = 45 cups of feed. 45 cups of feed is 45 * 3 = 140 cups.";
        assert_eq!(
            steps(text),
            vec![("15 * 3 = 45".into(), true), ("45 * 3 = 140".into(), false)]
        );
        let r = check_arithmetic(text);
        assert_eq!(r.wrong, 1);
        assert_eq!(r.final_answer.unwrap().normalized, "140");
        // 140 is stated, but no correct step computes it.
        assert_eq!(r.derived, Some(false));
    }

    #[test]
    fn currency_thousands_words_and_precedence() {
        assert_eq!(steps("$20 x 35 = $700"), vec![("20 x 35 = $700".into(), true)]);
        assert_eq!(
            steps("4,000 - 3,000 = 1,000 students"),
            vec![("4,000 - 3,000 = 1,000".into(), true)]
        );
        assert_eq!(steps("2 + 3 * 4 = 14"), vec![("2 + 3 * 4 = 14".into(), true)]);
        assert_eq!(steps("(2 + 3) × 4 = 20"), vec![("(2 + 3) × 4 = 20".into(), true)]);
        assert_eq!(steps("-5 + 3 = -2"), vec![("-5 + 3 = -2".into(), true)]);
        // Rounded as written.
        assert_eq!(steps("10 / 3 = 3.33"), vec![("10 / 3 = 3.33".into(), true)]);
        assert_eq!(steps("10 / 3 = 3.5"), vec![("10 / 3 = 3.5".into(), false)]);
    }

    #[test]
    fn chains_and_fractions() {
        assert_eq!(
            steps("2 * 3 = 6 * 4 = 24"),
            vec![("2 * 3 = 6".into(), true), ("6 * 4 = 24".into(), true)]
        );
        assert_eq!(steps("2/3 - 2/5 = 1/2."), vec![("2/3 - 2/5 = 1/2".into(), false)]);
        assert_eq!(
            steps("(5/6) * (5/6) = 25/36"),
            vec![("(5/6) * (5/6) = 25/36".into(), true)]
        );
    }

    #[test]
    fn what_is_not_arithmetic_is_left_alone() {
        // No operator, a single number, algebra, percentages, prose.
        for text in [
            "x = 5",
            "The total = 45",
            "3x + 2 = 11",
            "20% of 50 = 10",
            "100 - 20% = 80%",
            "Step 1: think. Step 2 = done",
            "",
        ] {
            assert!(steps(text).is_empty(), "{text}");
        }
        // A list's commas are not thousands separators.
        assert_eq!(steps("15,25 + 1 = 26"), vec![("25 + 1 = 26".into(), true)]);
    }

    #[test]
    fn units_between_numbers_are_skipped() {
        assert_eq!(
            steps("25 (lollipops) + 5 (lollipops) = 7."),
            vec![("25 (lollipops) + 5 (lollipops) = 7".into(), false)]
        );
        assert_eq!(
            steps("25 cups + 5 cups = 30 cups"),
            vec![("25 cups + 5 cups = 30".into(), true)]
        );
        // More than two words is prose, not a unit.
        assert!(steps("15 cups of feed is 3 = 45").is_empty());
    }

    #[test]
    fn division_by_zero_is_not_checked() {
        assert!(steps("5 / 0 = 1").is_empty());
    }

    #[test]
    fn the_final_answer_prefers_what_is_stated_as_the_answer() {
        let f = final_answer("So, the answer is $1,200.00. It took 3 days.").unwrap();
        assert!(f.explicit);
        assert_eq!(
            (f.text.as_str(), f.normalized.as_str(), f.value),
            ("1,200.00", "1200", 1200.0)
        );
        let f = final_answer("First 3, then 4.5 hours").unwrap();
        assert!(!f.explicit);
        assert_eq!(f.normalized, "4.5");
        assert_eq!(final_answer("#### 18").unwrap().normalized, "18");
        assert_eq!(final_answer("Answer: -7").unwrap().normalized, "-7");
        assert_eq!(final_answer("The change is -7").unwrap().normalized, "-7");
        assert_eq!(final_answer("It is 10-7").unwrap().normalized, "7");
        assert!(final_answer("no numbers here").is_none());
    }

    #[test]
    fn an_answer_is_derived_when_a_correct_step_computes_it() {
        let r = check_arithmetic("He pays 3 * 4 = 12 dollars, plus 7: 12 + 7 = 19. The answer is 19.");
        assert_eq!(r.wrong, 0);
        assert_eq!(r.derived, Some(true));
        let r = check_arithmetic("The answer is 19.");
        assert_eq!(r.derived, None);
    }
}
