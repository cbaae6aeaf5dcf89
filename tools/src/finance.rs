//! Finance tools: amounts, percentages and reporting periods out of text,
//! and a transaction screened for fraud signals.

use std::sync::OnceLock;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Timelike};
use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ToolError;

pub mod sentiment;

pub use sentiment::{SENTIMENTS, sentiment_cues};

/// Input of [`extract_amounts`].
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ExtractAmountsParams {
    /// Text to read: a sentence, a paragraph, a report.
    pub text: String,
}

/// What an extracted figure measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AmountKind {
    /// A sum of money (`$1.2 million`, `EUR 3,400.50`).
    Money,
    /// A percentage (`12.5%`).
    Percent,
    /// Basis points (`25 bps`).
    BasisPoints,
}

/// A figure found in the text.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct Amount {
    /// The text as written.
    pub text: String,
    pub kind: AmountKind,
    /// The value with its scale applied (`$1.2 million` is 1200000).
    pub value: f64,
    /// ISO 4217 code for money (`USD`, `EUR`, ...), when stated.
    pub currency: Option<String>,
    /// The scale word or suffix as written (`million`, `bn`, `k`), if any.
    pub scale: Option<String>,
    /// Byte offsets of `text` in the input.
    pub start: usize,
    pub end: usize,
}

/// What kind of reporting period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    Quarter,
    Half,
    NineMonths,
    FiscalYear,
    Year,
}

/// A reporting period found in the text.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct Period {
    /// The text as written.
    pub text: String,
    pub kind: PeriodKind,
    /// 1-4 for quarters, 1-2 for halves.
    pub number: Option<u8>,
    /// Four-digit year, when stated (`FY24` is 2024).
    pub year: Option<i32>,
    pub start: usize,
    pub end: usize,
}

/// Result of [`extract_amounts`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct ExtractedAmounts {
    pub amounts: Vec<Amount>,
    pub periods: Vec<Period>,
}

const CURRENCY_CODES: &str =
    "USD|EUR|GBP|JPY|CHF|CNY|RMB|INR|CAD|AUD|NZD|SEK|NOK|DKK|PLN|HKD|SGD|KRW|BRL|ZAR|MXN|RUB";
const SCALES: &str = r"trillion|billion|million|thousand|tn|bn|mln|mn|m|k|b";

fn money_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let number = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+";
        Regex::new(&format!(
            r"(?i)(?:(?P<sym>[$€£¥₹])|\b(?P<pre>{CURRENCY_CODES})\s?)\s?(?P<num>{number})(?:\s?(?P<scale>{SCALES})\b)?|\b(?P<num2>{number})(?:\s?(?P<scale2>{SCALES}))?\s?(?P<post>{CURRENCY_CODES}|dollars|euros|pounds|yen)\b"
        ))
        .expect("valid money pattern")
    })
}

fn percent_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?i)(?P<num>[-+]?\d+(?:\.\d+)?)\s?(?:(?P<pct>%|per ?cent\b|pct\b)|(?P<bps>bps\b|bp\b|basis points?\b))")
            .expect("valid percent pattern")
    })
}

fn period_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)\b(?:(?P<q>Q[1-4])|(?P<h>H[12])|(?P<nm>9M|nine months))(?:\s?(?:of\s)?(?:FY\s?)?'?(?P<qy>\d{4}|\d{2})\b)?|\b(?P<fy>FY|fiscal(?: year)?)\s?'?(?P<fyy>\d{4}|\d{2})\b|\b(?P<ord>first|second|third|fourth)\s(?P<unit>quarter|half)(?:\s(?:of\s)?(?:fiscal\s)?(?P<oy>\d{4}))?|\b(?:full[- ]year|year)\s(?P<yy>\d{4})\b",
        )
        .expect("valid period pattern")
    })
}

/// Finds sums of money, percentages, basis points and reporting periods.
pub fn extract_amounts(params: &ExtractAmountsParams) -> ExtractedAmounts {
    let text = params.text.as_str();
    let mut amounts = Vec::new();
    for c in money_re().captures_iter(text) {
        let m = c.get(0).expect("whole match");
        let (num, scale, currency) = match c.name("num") {
            Some(n) => (
                n.as_str(),
                c.name("scale"),
                c.name("sym").or(c.name("pre")).map(|x| x.as_str()),
            ),
            None => (&c["num2"], c.name("scale2"), c.name("post").map(|x| x.as_str())),
        };
        let Some(base) = parse_number(num) else { continue };
        let scale = scale.map(|s| s.as_str().to_string());
        // "m" or "b" after a currency code reads as a scale; alone it does not make money.
        let value = base * scale.as_deref().map_or(1.0, scale_factor);
        amounts.push(Amount {
            text: m.as_str().trim().to_string(),
            kind: AmountKind::Money,
            value,
            currency: currency.map(currency_code),
            scale,
            start: m.start(),
            end: m.end(),
        });
    }
    for c in percent_re().captures_iter(text) {
        let m = c.get(0).expect("whole match");
        if amounts.iter().any(|a| a.start < m.end() && m.start() < a.end) {
            continue;
        }
        let Some(value) = parse_number(&c["num"]) else {
            continue;
        };
        amounts.push(Amount {
            text: m.as_str().to_string(),
            kind: if c.name("pct").is_some() {
                AmountKind::Percent
            } else {
                AmountKind::BasisPoints
            },
            value,
            currency: None,
            scale: None,
            start: m.start(),
            end: m.end(),
        });
    }
    amounts.sort_by_key(|a| a.start);
    let mut periods = Vec::new();
    for c in period_re().captures_iter(text) {
        let m = c.get(0).expect("whole match");
        let year = ["qy", "fyy", "oy", "yy"]
            .iter()
            .find_map(|k| c.name(k))
            .and_then(|y| parse_year(y.as_str()));
        let (kind, number) = if let Some(q) = c.name("q") {
            (PeriodKind::Quarter, q.as_str()[1..].parse().ok())
        } else if let Some(h) = c.name("h") {
            (PeriodKind::Half, h.as_str()[1..].parse().ok())
        } else if c.name("nm").is_some() {
            (PeriodKind::NineMonths, None)
        } else if c.name("fy").is_some() {
            (PeriodKind::FiscalYear, None)
        } else if let Some(ord) = c.name("ord") {
            let n = match ord.as_str().to_lowercase().as_str() {
                "first" => 1,
                "second" => 2,
                "third" => 3,
                _ => 4,
            };
            let half = c
                .name("unit")
                .is_some_and(|u| u.as_str().eq_ignore_ascii_case("half"));
            if half && n > 2 {
                continue;
            }
            (
                if half {
                    PeriodKind::Half
                } else {
                    PeriodKind::Quarter
                },
                Some(n),
            )
        } else {
            (PeriodKind::Year, None)
        };
        periods.push(Period {
            text: m.as_str().to_string(),
            kind,
            number,
            year,
            start: m.start(),
            end: m.end(),
        });
    }
    ExtractedAmounts { amounts, periods }
}

fn parse_number(s: &str) -> Option<f64> {
    s.replace(',', "").parse::<f64>().ok().filter(|v| v.is_finite())
}

fn parse_year(s: &str) -> Option<i32> {
    let y: i32 = s.parse().ok()?;
    Some(if s.len() == 2 { 2000 + y } else { y })
}

fn scale_factor(s: &str) -> f64 {
    match s.to_lowercase().as_str() {
        "trillion" | "tn" => 1e12,
        "billion" | "bn" | "b" => 1e9,
        "million" | "mn" | "mln" | "m" => 1e6,
        "thousand" | "k" => 1e3,
        _ => 1.0,
    }
}

fn currency_code(s: &str) -> String {
    match s {
        "$" => "USD".into(),
        "€" => "EUR".into(),
        "£" => "GBP".into(),
        "¥" => "JPY".into(),
        "₹" => "INR".into(),
        other => match other.to_lowercase().as_str() {
            "dollars" => "USD".into(),
            "euros" => "EUR".into(),
            "pounds" => "GBP".into(),
            "yen" => "JPY".into(),
            "rmb" => "CNY".into(),
            _ => other.to_uppercase(),
        },
    }
}

/// A transaction to screen, with the account's recent history.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScreenTransactionParams {
    /// Amount in the account's currency; must be positive.
    pub amount: f64,
    /// ISO 4217 currency code, e.g. `EUR`.
    #[serde(default)]
    pub currency: Option<String>,
    /// When it happened, in the account holder's local time: RFC 3339
    /// (`2025-03-01T02:14:00+01:00`) or `YYYY-MM-DDTHH:MM:SS`.
    pub timestamp: String,
    /// Who is paid.
    pub payee: String,
    /// ISO country code where the transaction happens.
    pub country: String,
    /// The account holder's home country (ISO code).
    #[serde(default)]
    pub home_country: Option<String>,
    /// Earlier transactions of the same account, any order.
    #[serde(default)]
    pub history: Vec<PastTransaction>,
}

/// One earlier transaction.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PastTransaction {
    pub amount: f64,
    /// Same formats as the screened transaction's.
    pub timestamp: String,
    pub payee: String,
    #[serde(default)]
    pub country: Option<String>,
}

/// One reason for suspicion.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct FraudSignal {
    /// `amount_outlier`, `velocity`, `new_payee`, `country_mismatch`,
    /// `odd_hour` or `round_amount`.
    pub signal: String,
    /// How strongly it points at fraud, 0 to 1.
    pub score: f64,
    /// Why, in words a reviewer can check.
    pub reason: String,
}

/// Result of [`screen_transaction`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct Screening {
    /// Combined risk, 0 to 1: 1 − Π(1 − score) over the signals.
    pub risk: f64,
    /// `low` (< 0.3), `medium` (< 0.6) or `high`.
    pub level: String,
    pub signals: Vec<FraudSignal>,
}

/// Checks a transaction against the account's history for the usual fraud
/// signals, each with a score and a reason.
pub fn screen_transaction(t: &ScreenTransactionParams) -> Result<Screening, ToolError> {
    if !(t.amount.is_finite() && t.amount > 0.0) {
        return Err(ToolError::invalid(
            "amount",
            format!("must be a positive number, got {}", t.amount),
        ));
    }
    if t.payee.trim().is_empty() {
        return Err(ToolError::invalid("payee", "must name who is paid".into()));
    }
    let when = parse_time(&t.timestamp).map_err(|e| ToolError::invalid("timestamp", e))?;
    let mut past = Vec::with_capacity(t.history.len());
    for (i, h) in t.history.iter().enumerate() {
        let at = parse_time(&h.timestamp)
            .map_err(|e| ToolError::invalid(&format!("history[{i}].timestamp"), e))?;
        if !(h.amount.is_finite() && h.amount >= 0.0) {
            return Err(ToolError::invalid(
                &format!("history[{i}].amount"),
                format!("must be 0 or more, got {}", h.amount),
            ));
        }
        past.push((at, h));
    }
    let mut signals = Vec::new();
    let mut push = |signal: &str, score: f64, reason: String| {
        signals.push(FraudSignal {
            signal: signal.to_string(),
            score: (score.clamp(0.0, 1.0) * 100.0).round() / 100.0,
            reason,
        })
    };

    if past.len() >= 3 {
        let mut amounts: Vec<f64> = past.iter().map(|(_, h)| h.amount).collect();
        amounts.sort_by(f64::total_cmp);
        let median = amounts[amounts.len() / 2];
        let max = *amounts.last().expect("non-empty");
        if median > 0.0 && t.amount > 3.0 * median && t.amount > max {
            let ratio = t.amount / median;
            push(
                "amount_outlier",
                (ratio.log10() / 2.0).clamp(0.3, 1.0),
                format!(
                    "{:.2} is {ratio:.1}x the account's median of {median:.2} over {} transactions and above its largest ({max:.2})",
                    t.amount,
                    past.len()
                ),
            );
        }
    }
    let last_hour = past
        .iter()
        .filter(|(at, _)| {
            let d = when.signed_duration_since(*at).num_seconds();
            (0..=3600).contains(&d)
        })
        .count();
    if last_hour >= 3 {
        push(
            "velocity",
            0.2 + 0.15 * (last_hour as f64 - 2.0),
            format!("{last_hour} other transactions in the hour before this one"),
        );
    }
    if !past.is_empty() && !past.iter().any(|(_, h)| same(&h.payee, &t.payee)) {
        push(
            "new_payee",
            0.25,
            format!(
                "`{}` was never paid in the {} earlier transactions",
                t.payee,
                past.len()
            ),
        );
    }
    let seen_countries: Vec<&str> = past.iter().filter_map(|(_, h)| h.country.as_deref()).collect();
    match &t.home_country {
        Some(home) if !same(home, &t.country) => push(
            "country_mismatch",
            if seen_countries.iter().any(|c| same(c, &t.country)) {
                0.2
            } else {
                0.45
            },
            format!("made in {} while the account holder lives in {home}", t.country),
        ),
        None if !seen_countries.is_empty() && !seen_countries.iter().any(|c| same(c, &t.country)) => push(
            "country_mismatch",
            0.35,
            format!(
                "made in {}, a country absent from the account's history",
                t.country
            ),
        ),
        _ => {}
    }
    let hour = when.hour();
    if hour < 5 {
        push(
            "odd_hour",
            0.2,
            format!("made at {:02}:{:02} local time", hour, when.minute()),
        );
    }
    if t.amount >= 500.0 && t.amount % 100.0 == 0.0 {
        push(
            "round_amount",
            if t.amount % 1000.0 == 0.0 { 0.2 } else { 0.1 },
            format!("a round amount ({:.0}), common in cash-out fraud", t.amount),
        );
    }
    let risk = 1.0 - signals.iter().map(|s| 1.0 - s.score).product::<f64>();
    let risk = (risk * 100.0).round() / 100.0;
    let level = if risk < 0.3 {
        "low"
    } else if risk < 0.6 {
        "medium"
    } else {
        "high"
    };
    Ok(Screening {
        risk,
        level: level.to_string(),
        signals,
    })
}

fn same(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Parses RFC 3339 or a naive `YYYY-MM-DDTHH:MM[:SS]`, keeping local time.
fn parse_time(s: &str) -> Result<NaiveDateTime, String> {
    if let Ok(t) = DateTime::<FixedOffset>::parse_from_rfc3339(s.trim()) {
        return Ok(t.naive_local());
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s.trim(), f) {
            return Ok(t);
        }
    }
    Err(format!(
        "`{s}` is not a date and time; use RFC 3339, e.g. 2025-03-01T14:30:00+01:00"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amounts(text: &str) -> Vec<Amount> {
        extract_amounts(&ExtractAmountsParams { text: text.into() }).amounts
    }

    #[test]
    fn money_with_currency_and_scale() {
        let a = amounts("Revenue reached $1.2 million, up from EUR 3,400.50 and €2bn; costs were 450 USD.");
        let got: Vec<(f64, Option<&str>)> = a.iter().map(|a| (a.value, a.currency.as_deref())).collect();
        assert_eq!(
            got,
            [
                (1.2e6, Some("USD")),
                (3400.5, Some("EUR")),
                (2e9, Some("EUR")),
                (450.0, Some("USD"))
            ]
        );
        assert_eq!(a[0].text, "$1.2 million");
        assert_eq!(
            &"Revenue reached $1.2 million"[a[0].start..a[0].end],
            "$1.2 million"
        );
    }

    #[test]
    fn phrasebank_spacing_and_percentages() {
        let a = amounts(
            "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn , up 12.5 % ; margin fell 25 bps .",
        );
        assert_eq!(a.len(), 4, "{a:?}");
        assert_eq!((a[0].value, a[0].scale.as_deref()), (13.1e6, Some("mn")));
        assert_eq!(a[1].value, 8.7e6);
        assert_eq!((a[2].kind, a[2].value), (AmountKind::Percent, 12.5));
        assert_eq!((a[3].kind, a[3].value), (AmountKind::BasisPoints, 25.0));
        let a = amounts("Sales grew 3 percent to 40 million dollars.");
        assert_eq!((a[0].kind, a[0].value), (AmountKind::Percent, 3.0));
        assert_eq!((a[1].value, a[1].currency.as_deref()), (40e6, Some("USD")));
    }

    #[test]
    fn plain_numbers_are_not_money() {
        assert!(amounts("The company has 120 employees in 3 offices.").is_empty());
    }

    #[test]
    fn reporting_periods() {
        let p = extract_amounts(&ExtractAmountsParams {
            text: "In Q3 2025 and FY24, H1 sales beat the third quarter of 2023; full year 2022 was flat, 9M 2024 too.".into(),
        })
        .periods;
        let got: Vec<(PeriodKind, Option<u8>, Option<i32>)> =
            p.iter().map(|p| (p.kind, p.number, p.year)).collect();
        assert_eq!(
            got,
            [
                (PeriodKind::Quarter, Some(3), Some(2025)),
                (PeriodKind::FiscalYear, None, Some(2024)),
                (PeriodKind::Half, Some(1), None),
                (PeriodKind::Quarter, Some(3), Some(2023)),
                (PeriodKind::Year, None, Some(2022)),
                (PeriodKind::NineMonths, None, Some(2024)),
            ]
        );
    }

    fn tx(amount: f64, timestamp: &str, payee: &str, country: &str) -> ScreenTransactionParams {
        ScreenTransactionParams {
            amount,
            currency: Some("EUR".into()),
            timestamp: timestamp.into(),
            payee: payee.into(),
            country: country.into(),
            home_country: Some("FI".into()),
            history: (1..=10)
                .map(|d| PastTransaction {
                    amount: 40.0 + d as f64,
                    timestamp: format!("2025-03-{d:02}T12:00:00"),
                    payee: "Grocer".into(),
                    country: Some("FI".into()),
                })
                .collect(),
        }
    }

    #[test]
    fn an_ordinary_purchase_is_low_risk() {
        let s = screen_transaction(&tx(47.3, "2025-03-12T13:00:00", "Grocer", "FI")).unwrap();
        assert_eq!(s.level, "low");
        assert!(s.signals.is_empty(), "{s:?}");
    }

    #[test]
    fn a_large_round_night_payment_abroad_to_a_stranger_is_high_risk() {
        let s = screen_transaction(&tx(
            5000.0,
            "2025-03-12T03:12:00+02:00",
            "Crypto Exchange Ltd",
            "NG",
        ))
        .unwrap();
        let names: Vec<&str> = s.signals.iter().map(|s| s.signal.as_str()).collect();
        assert_eq!(
            names,
            [
                "amount_outlier",
                "new_payee",
                "country_mismatch",
                "odd_hour",
                "round_amount"
            ]
        );
        assert_eq!(s.level, "high");
        assert!(s.signals[0].reason.contains("median"), "{}", s.signals[0].reason);
    }

    #[test]
    fn bursts_of_transactions_raise_velocity() {
        let mut t = tx(45.0, "2025-03-11T12:50:00", "Grocer", "FI");
        for m in [10, 20, 30, 40] {
            t.history.push(PastTransaction {
                amount: 45.0,
                timestamp: format!("2025-03-11T12:{m}:00"),
                payee: "Grocer".into(),
                country: Some("FI".into()),
            });
        }
        let s = screen_transaction(&t).unwrap();
        assert_eq!(s.signals[0].signal, "velocity");
        assert!(s.signals[0].reason.starts_with("4 other transactions"));
    }

    #[test]
    fn bad_fields_are_named_in_the_error() {
        let err = screen_transaction(&tx(-5.0, "2025-03-12T13:00:00", "A", "FI")).unwrap_err();
        assert!(err.to_string().contains("amount"), "{err}");
        let err = screen_transaction(&tx(5.0, "yesterday", "A", "FI")).unwrap_err();
        assert!(
            err.to_string().contains("timestamp") && err.to_string().contains("RFC 3339"),
            "{err}"
        );
        let mut t = tx(5.0, "2025-03-12T13:00:00", "A", "FI");
        t.history[2].timestamp = "nope".into();
        assert!(
            screen_transaction(&t)
                .unwrap_err()
                .to_string()
                .contains("history[2].timestamp")
        );
        let missing = serde_json::from_str::<ScreenTransactionParams>(
            r#"{"amount": 5, "payee": "x", "country": "FI"}"#,
        );
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("missing field `timestamp`")
        );
    }
}
