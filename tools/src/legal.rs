//! Legal tools: a contract split into its clauses, and the parties, dates,
//! durations and notice periods named in it.

use std::sync::OnceLock;

use chrono::NaiveDate;
use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod clause_types;

pub use clause_types::{CLAUSE_TYPES, clause_cues};

/// Input of [`split_clauses`] and [`extract_terms`].
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ContractText {
    /// The contract, or an excerpt of it, as plain text.
    pub text: String,
}

/// One clause of a contract.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct Clause {
    /// Its number or letter as written (`12.1`, `(b)`, `Article IV`), if any.
    pub number: Option<String>,
    /// Its heading (`Governing Law`), if any.
    pub heading: Option<String>,
    /// The clause's text without its number and heading.
    pub text: String,
    /// 1 for sections, 2 for subsections (`1.2`) and lettered sub-clauses
    /// under a section, and so on.
    pub level: usize,
    /// Byte offsets of the whole clause in the input.
    pub start: usize,
    pub end: usize,
}

/// Result of [`split_clauses`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct Clauses {
    pub clauses: Vec<Clause>,
}

fn marker_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?x)^[\ \t]*(?:
                (?P<art>(?:ARTICLE|Article|SECTION|Section|Clause|CLAUSE)\s+(?:\d+(?:\.\d+)*|[IVXLC]+)\.?)
              | (?P<num>\d{1,3}(?:\.\d{1,3})*)(?:\.|\))?
              | \((?P<letter>[a-z]{1,2}|[ivx]{1,5}|\d{1,2})\)
              | (?P<letter2>[a-z])\)
            )(?:[\ \t]+|[\ \t]*\r?\n|[\ \t]*$)",
        )
        .expect("valid marker pattern")
    })
}

/// Splits a contract into clauses: numbered sections (`1.`, `1.2`,
/// `Section 4`, `Article IV`), lettered sub-clauses (`(a)`, `(iv)`), and
/// plain paragraphs when the text has no numbering. Headings are taken from
/// a short title line or a short title before the first full stop.
pub fn split_clauses(params: &ContractText) -> Clauses {
    let text = params.text.as_str();
    // Line starts with their byte offsets.
    let mut lines: Vec<(usize, &str)> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        lines.push((offset, line));
        offset += line.len();
    }
    let has_markers = lines
        .iter()
        .any(|(_, l)| marker_re().is_match(l) && starts_clause(l));
    let mut clauses = Vec::new();
    if !has_markers {
        // Plain paragraphs, separated by blank lines.
        let mut start: Option<usize> = None;
        let mut end = 0;
        for (off, line) in &lines {
            if line.trim().is_empty() {
                if let Some(s) = start.take() {
                    clauses.push(plain(text, s, end));
                }
            } else {
                start.get_or_insert(*off);
                end = off + line.len();
            }
        }
        if let Some(s) = start {
            clauses.push(plain(text, s, end));
        }
        return Clauses { clauses };
    }
    // Blocks that start at a marker line; text before the first is a preamble.
    let mut starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, (_, l))| marker_re().is_match(l) && starts_clause(l))
        .map(|(i, _)| i)
        .collect();
    let mut section_level = 1;
    if starts[0] > 0 && lines[..starts[0]].iter().any(|(_, l)| !l.trim().is_empty()) {
        starts.insert(0, 0);
    }
    for (k, &first) in starts.iter().enumerate() {
        let last = starts.get(k + 1).copied().unwrap_or(lines.len());
        let start = lines[first].0;
        let end = lines.get(last).map_or(text.len(), |(o, _)| *o);
        let block = &text[start..end];
        let Some(caps) = marker_re().captures(block) else {
            clauses.push(plain(text, start, end));
            continue;
        };
        if !starts_clause(block) {
            clauses.push(plain(text, start, end));
            continue;
        }
        let whole = caps.get(0).expect("whole match");
        let (number, level) = if let Some(a) = caps.name("art") {
            section_level = 1;
            (a.as_str().trim_end_matches('.').to_string(), 1)
        } else if let Some(n) = caps.name("num") {
            let depth = n.as_str().split('.').filter(|p| !p.is_empty()).count();
            section_level = depth;
            (n.as_str().to_string(), depth)
        } else {
            let l = caps
                .name("letter")
                .or(caps.name("letter2"))
                .expect("one alternative matched");
            (format!("({})", l.as_str()), section_level + 1)
        };
        let body = &block[whole.end()..];
        let (heading, rest) = heading_of(body);
        clauses.push(Clause {
            number: Some(number),
            heading,
            text: normalise(rest),
            level,
            start,
            end: start + block.trim_end().len(),
        });
    }
    clauses.retain(|c| !c.text.is_empty() || c.heading.is_some());
    Clauses { clauses }
}

/// A marker at the start of a line only starts a clause when text follows
/// it; `2024 was a good year` is not section 2024.
fn starts_clause(line: &str) -> bool {
    let Some(c) = marker_re().captures(line) else {
        return false;
    };
    if let Some(n) = c.name("num") {
        // Years and large numbers are not section numbers.
        let first: u32 = n
            .as_str()
            .split('.')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if first > 200 {
            return false;
        }
    }
    let rest = &line[c.get(0).expect("whole").end()..];
    // `ARTICLE IV` may stand alone on its line, its heading below it.
    if c.name("art").is_some() && rest.trim().is_empty() {
        return true;
    }
    rest.trim_start()
        .chars()
        .next()
        .is_some_and(|ch| ch.is_alphabetic() || ch == '"' || ch == '“')
}

fn plain(text: &str, start: usize, end: usize) -> Clause {
    let block = &text[start..end];
    let (heading, rest) = heading_of(block);
    Clause {
        number: None,
        heading,
        text: normalise(rest),
        level: 1,
        start,
        end: start + block.trim_end().len(),
    }
}

/// Takes a heading off the front of a clause: a short title line of its
/// own, or a short capitalised title ending at the first full stop.
fn heading_of(body: &str) -> (Option<String>, &str) {
    let body = body.trim_start();
    let first_line = body.lines().next().unwrap_or("");
    let looks_like_title = |t: &str| {
        let words: Vec<&str> = t.split_whitespace().collect();
        !words.is_empty()
            && words.len() <= 8
            && words
                .iter()
                .filter(|w| w.len() > 3)
                .all(|w| w.chars().next().is_some_and(|c| c.is_uppercase()))
    };
    let line_title = first_line.trim().trim_end_matches([':', '.']);
    if body.len() > first_line.len()
        && looks_like_title(line_title)
        && !first_line.trim().ends_with([',', ';'])
        && line_title.split_whitespace().count() <= 8
    {
        let rest = &body[first_line.len()..];
        return (Some(line_title.to_string()), rest);
    }
    if let Some(dot) = first_line.find(". ") {
        let candidate = first_line[..dot].trim();
        if candidate.split_whitespace().count() <= 6 && looks_like_title(candidate) {
            return (Some(candidate.to_string()), &body[dot + 2..]);
        }
    }
    (None, body)
}

fn normalise(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A party to the contract.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct Party {
    /// The party's name as written (`Acme Software, Inc.`).
    pub name: String,
    /// The defined term it goes by (`Supplier`), if the contract gives one.
    pub role: Option<String>,
}

/// A date named in the text.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct DateMention {
    pub text: String,
    /// The date as YYYY-MM-DD. Numeric dates are read month first (`03/04/2025` is 4 March)
    /// unless the first number is above 12.
    pub iso: Option<String>,
    pub start: usize,
    pub end: usize,
}

/// A length of time named in the text.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct Duration {
    pub text: String,
    pub value: u32,
    /// `days`, `business_days`, `weeks`, `months` or `years`.
    pub unit: String,
    /// Length in calendar days, approximately (a month is 30, a year 365,
    /// a business day 1.4).
    pub approx_days: f64,
    /// Whether the text ties it to a notice (`thirty (30) days' prior written notice`).
    pub is_notice_period: bool,
    pub start: usize,
    pub end: usize,
}

/// Result of [`extract_terms`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct Terms {
    pub parties: Vec<Party>,
    pub dates: Vec<DateMention>,
    pub durations: Vec<Duration>,
    /// The durations that are notice periods (also in `durations`).
    pub notice_periods: Vec<Duration>,
}

const NUMBER_WORDS: &[(&str, u32)] = &[
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
    ("eleven", 11),
    ("twelve", 12),
    ("fourteen", 14),
    ("fifteen", 15),
    ("eighteen", 18),
    ("twenty", 20),
    ("twenty-four", 24),
    ("thirty", 30),
    ("forty-five", 45),
    ("sixty", 60),
    ("ninety", 90),
    ("a hundred and eighty", 180),
    ("one hundred eighty", 180),
];

const MONTHS: &str = "January|February|March|April|May|June|July|August|September|October|November|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec";

fn party_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r#"\b(?P<name>(?:[A-Z][A-Za-z0-9&'\-]*[ ,]+){1,6}?(?:Inc\.|Corp\.|Ltd\.|L\.L\.C\.|S\.A\.|L\.P\.|N\.V\.|B\.V\.|(?:Inc|Incorporated|LLC|Ltd|Limited|Corporation|Corp|Company|GmbH|AG|SA|plc|PLC|LLP|LP|Pty Ltd)\b))(?:[^()]{0,120}?\(\s*(?:the\s+|hereinafter\s+)?["“](?P<role>[^"”]{2,40})["”]\s*\))?"#,
        )
        .expect("valid party pattern")
    })
}

fn between_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r#"(?i:by and between|between)\s+(?P<a>[A-Z][^,;()\n]{1,80}?)\s*(?:,[^()]{0,120}?)?\(\s*(?:the\s+)?["“](?P<ra>[^"”]{2,40})["”]\s*\)\s*,?\s*and\s+(?P<b>[A-Z][^,;()\n]{1,80}?)\s*(?:,[^()]{0,120}?)?\(\s*(?:the\s+)?["“](?P<rb>[^"”]{2,40})["”]\s*\)"#,
        )
        .expect("valid between pattern")
    })
}

fn date_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(&format!(
            r"\b(?:(?P<m1>{MONTHS})\.?\s+(?P<d1>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<y1>\d{{4}})|(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:day\s+of\s+)?(?P<m2>{MONTHS})\.?,?\s+(?P<y2>\d{{4}})|(?P<y3>\d{{4}})-(?P<mo3>\d{{2}})-(?P<d3>\d{{2}})|(?P<a4>\d{{1,2}})/(?P<b4>\d{{1,2}})/(?P<y4>\d{{4}}))\b"
        ))
        .expect("valid date pattern")
    })
}

fn duration_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let words: Vec<&str> = NUMBER_WORDS.iter().map(|(w, _)| *w).collect();
        Regex::new(&format!(
            r"(?i)\b(?:(?P<word>{})\s*(?:\((?P<paren>\d+)\)\s*)?|(?P<num>\d+)\s*)(?:-\s*)?(?P<unit>business days?|calendar days?|days?|weeks?|months?|years?)(?:['’]s?)?",
            words.join("|")
        ))
        .expect("valid duration pattern")
    })
}

/// Finds the parties (with their defined roles), dates, durations and
/// notice periods a contract names.
pub fn extract_terms(params: &ContractText) -> Terms {
    let text = params.text.as_str();
    let mut parties: Vec<Party> = Vec::new();
    for c in between_re().captures_iter(text) {
        add_party(&mut parties, &c["a"], Some(&c["ra"]));
        add_party(&mut parties, &c["b"], Some(&c["rb"]));
    }
    for c in party_re().captures_iter(text) {
        let name = c["name"].trim_start_matches(|ch: char| !ch.is_alphanumeric());
        // "This Agreement ... Acme Inc." : drop leading sentence words.
        let name = name
            .strip_prefix("This ")
            .or_else(|| name.strip_prefix("The "))
            .unwrap_or(name);
        let name = name.trim().trim_end_matches(',').trim();
        if let Some(p) = parties
            .iter_mut()
            .find(|p| p.name.contains(name) || name.starts_with(&p.name))
        {
            // The same party: keep the fuller name ("Acme, Inc." over "Acme").
            if name.len() > p.name.len() {
                p.name = name.to_string();
            }
            if p.role.is_none() {
                p.role = c.name("role").map(|r| r.as_str().to_string());
            }
            continue;
        }
        add_party(&mut parties, name, c.name("role").map(|r| r.as_str()));
    }

    let dates = date_re()
        .captures_iter(text)
        .map(|c| {
            let m = c.get(0).expect("whole match");
            let iso = date_of(&c).map(|d| d.format("%Y-%m-%d").to_string());
            DateMention {
                text: m.as_str().to_string(),
                iso,
                start: m.start(),
                end: m.end(),
            }
        })
        .collect();

    let mut durations = Vec::new();
    for c in duration_re().captures_iter(text) {
        let m = c.get(0).expect("whole match");
        let value = if let Some(p) = c.name("paren") {
            p.as_str().parse().ok()
        } else if let Some(n) = c.name("num") {
            n.as_str().parse().ok()
        } else {
            let w = c["word"].to_lowercase();
            NUMBER_WORDS.iter().find(|(x, _)| *x == w).map(|(_, v)| *v)
        };
        let Some(value) = value else { continue };
        let unit_text = c["unit"].to_lowercase();
        let (unit, per) = if unit_text.starts_with("business") {
            ("business_days", 1.4)
        } else if unit_text.contains("day") {
            ("days", 1.0)
        } else if unit_text.starts_with("week") {
            ("weeks", 7.0)
        } else if unit_text.starts_with("month") {
            ("months", 30.0)
        } else {
            ("years", 365.0)
        };
        let window_start = floor_char(text, m.start().saturating_sub(60));
        let window_end = floor_char(text, (m.end() + 40).min(text.len()));
        let around = text[window_start..window_end].to_lowercase();
        let is_notice_period = around.contains("notice") || around.contains("notify");
        durations.push(Duration {
            text: m.as_str().trim_end_matches(['\'', '’']).to_string(),
            value,
            unit: unit.to_string(),
            approx_days: (value as f64 * per * 10.0).round() / 10.0,
            is_notice_period,
            start: m.start(),
            end: m.end(),
        });
    }
    let notice_periods = durations.iter().filter(|d| d.is_notice_period).cloned().collect();
    Terms {
        parties,
        dates,
        durations,
        notice_periods,
    }
}

/// Adds a party, or its role to one already found under the same name.
fn add_party(parties: &mut Vec<Party>, name: &str, role: Option<&str>) {
    let name = name.trim().trim_end_matches(',').trim().to_string();
    if name.len() < 2 {
        return;
    }
    let role = role.map(|r| r.trim().to_string());
    match parties.iter_mut().find(|p| p.name.eq_ignore_ascii_case(&name)) {
        Some(p) => {
            if p.role.is_none() {
                p.role = role;
            }
        }
        None => parties.push(Party { name, role }),
    }
}

fn floor_char(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn date_of(c: &regex::Captures<'_>) -> Option<NaiveDate> {
    let month = |name: &str| {
        let n = name.to_lowercase();
        [
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ]
        .iter()
        .position(|m| n.starts_with(m))
        .map(|i| i as u32 + 1)
    };
    let num = |k: &str| c.name(k).and_then(|m| m.as_str().parse::<u32>().ok());
    if let Some(m) = c.name("m1") {
        NaiveDate::from_ymd_opt(num("y1")? as i32, month(m.as_str())?, num("d1")?)
    } else if let Some(m) = c.name("m2") {
        NaiveDate::from_ymd_opt(num("y2")? as i32, month(m.as_str())?, num("d2")?)
    } else if c.name("y3").is_some() {
        NaiveDate::from_ymd_opt(num("y3")? as i32, num("mo3")?, num("d3")?)
    } else {
        let (a, b, y) = (num("a4")?, num("b4")?, num("y4")? as i32);
        if a > 12 {
            NaiveDate::from_ymd_opt(y, b, a)
        } else {
            NaiveDate::from_ymd_opt(y, a, b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NDA: &str = "MUTUAL NON-DISCLOSURE AGREEMENT\n\nThis Agreement is entered into as of March 3, 2025 by and between Acme Software, Inc., a Delaware corporation (the \"Supplier\"), and Globex Ltd (\"Customer\").\n\n1. Definitions. \"Confidential Information\" means any information disclosed by either party.\n\n2. Term and Termination\nThis Agreement begins on the Effective Date and continues for two (2) years.\n(a) Either party may terminate for convenience upon thirty (30) days' prior written notice.\n(b) Either party may terminate immediately for material breach not cured within 15 days.\n\n3. Governing Law. This Agreement is governed by the laws of the State of New York.\n3.1 Venue. Disputes go to the courts of New York County.\n";

    #[test]
    fn numbered_sections_headings_and_lettered_subclauses() {
        let c = split_clauses(&ContractText { text: NDA.into() }).clauses;
        let summary: Vec<(Option<&str>, Option<&str>, usize)> = c
            .iter()
            .map(|c| (c.number.as_deref(), c.heading.as_deref(), c.level))
            .collect();
        assert_eq!(
            summary,
            [
                (None, Some("MUTUAL NON-DISCLOSURE AGREEMENT"), 1),
                (Some("1"), Some("Definitions"), 1),
                (Some("2"), Some("Term and Termination"), 1),
                (Some("(a)"), None, 2),
                (Some("(b)"), None, 2),
                (Some("3"), Some("Governing Law"), 1),
                (Some("3.1"), Some("Venue"), 2),
            ]
        );
        assert!(c[2].text.starts_with("This Agreement begins"));
        assert!(c[3].text.contains("thirty (30) days' prior written notice"));
        assert_eq!(&NDA[c[5].start..c[5].start + 2], "3.");
    }

    #[test]
    fn articles_and_sections_by_name() {
        let text = "ARTICLE I\nDEFINITIONS\nTerms have the meanings below.\nARTICLE II\nPAYMENT\nFees are due monthly.\nSection 2.1 Late Payment. Interest accrues at 1% per month.\n";
        let c = split_clauses(&ContractText { text: text.into() }).clauses;
        let got: Vec<(&str, Option<&str>)> = c
            .iter()
            .map(|c| (c.number.as_deref().unwrap(), c.heading.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("ARTICLE I", Some("DEFINITIONS")),
                ("ARTICLE II", Some("PAYMENT")),
                ("Section 2.1", Some("Late Payment"))
            ]
        );
    }

    #[test]
    fn unnumbered_text_splits_into_paragraphs_and_years_are_not_sections() {
        let text = "The parties agree as follows.\n\n2024 was the first year of the programme and it went well.\n\nPayment is due within 30 days.";
        let c = split_clauses(&ContractText { text: text.into() }).clauses;
        assert_eq!(c.len(), 3);
        assert!(c.iter().all(|c| c.number.is_none()));
        assert!(
            split_clauses(&ContractText {
                text: "  \n\n ".into()
            })
            .clauses
            .is_empty()
        );
    }

    #[test]
    fn parties_dates_durations_and_notice_periods() {
        let t = extract_terms(&ContractText { text: NDA.into() });
        assert_eq!(
            t.parties,
            [
                Party {
                    name: "Acme Software, Inc.".into(),
                    role: Some("Supplier".into())
                },
                Party {
                    name: "Globex Ltd".into(),
                    role: Some("Customer".into())
                },
            ]
        );
        assert_eq!(t.dates.len(), 1);
        assert_eq!(t.dates[0].iso.as_deref(), Some("2025-03-03"));
        let d: Vec<(u32, &str, bool)> = t
            .durations
            .iter()
            .map(|d| (d.value, d.unit.as_str(), d.is_notice_period))
            .collect();
        assert_eq!(d, [(2, "years", false), (30, "days", true), (15, "days", false)]);
        assert_eq!(t.notice_periods.len(), 1);
        assert_eq!(t.notice_periods[0].approx_days, 30.0);
    }

    #[test]
    fn date_formats() {
        let t = extract_terms(&ContractText {
            text: "Signed on 1st day of January, 2024, effective 2024-02-29, renewed 03/04/2025 and 25/12/2025; ends Sept. 30, 2026.".into(),
        });
        let iso: Vec<Option<&str>> = t.dates.iter().map(|d| d.iso.as_deref()).collect();
        assert_eq!(
            iso,
            [
                Some("2024-01-01"),
                Some("2024-02-29"),
                Some("2025-03-04"),
                Some("2025-12-25"),
                Some("2026-09-30")
            ]
        );
    }

    #[test]
    fn notice_worded_around_the_duration_and_business_days() {
        let t = extract_terms(&ContractText {
            text: "The Customer shall notify the Supplier in writing no later than ninety (90) days before renewal. Payment is due within 10 business days.".into(),
        });
        assert_eq!(t.notice_periods.len(), 1);
        assert_eq!(t.notice_periods[0].value, 90);
        assert_eq!(t.durations[1].unit, "business_days");
        assert_eq!(t.durations[1].approx_days, 14.0);
        let empty = extract_terms(&ContractText { text: String::new() });
        assert!(empty.parties.is_empty() && empty.dates.is_empty() && empty.durations.is_empty());
    }
}
