//! Cue phrases for the sentiment of a financial sentence: the lexical half
//! of the finance specialist's `sentiment` (the other half is similarity to
//! labelled examples, computed by the specialist with a sentence encoder).
//!
//! Financial sentiment is mostly about direction and subject: "profit
//! rose" is good news, "loss widened" bad, "loss narrowed" good again. So a
//! direction word (rose, fell, narrowed…) is scored by the nearest subject
//! (profit, sales, orders… or loss, costs, debt…); figures compared with
//! "compared with" or "versus" are scored by which one is larger; and events
//! that are good or bad whatever the figures (a profit warning, lay-offs, a
//! record, a contract won) add their own weight.

use std::sync::OnceLock;

use regex::Regex;

use crate::cues::LabelCues;

/// The sentiment labels, in the order the tools report them.
pub const SENTIMENTS: [&str; 3] = ["positive", "negative", "neutral"];

const UP: &str = r"rose|rise|rises|risen|rising|increas\w*|grew|grow\w*|up|improv\w*|climb\w*|jump\w*|surg\w*|gain\w*|doubl\w*|tripl\w*|higher|boost\w*|strengthen\w*|exceed\w*|beat|rais\w*|lift\w*|expand\w*|soar\w*|advanc\w*|widen\w*|larger|bigger|rebound\w*|recover\w*|upgrad\w*|outperform\w*|record|progress\w*|accelerat\w*|peaked|more";
const DOWN: &str = r"fell|fall\w*|decreas\w*|declin\w*|drop\w*|down|lower\w*|slip\w*|slump\w*|plung\w*|weaken\w*|cut|cuts|reduc\w*|shrank|shrunk|shrink\w*|contract(ed|ing)|deteriorat\w*|worsen\w*|narrow\w*|smaller|tumbl\w*|sank|sunk|dip\w*|downgrad\w*|eas(ed|ing)|halv\w*|slow\w*|less|fewer|diminish\w*";
/// Subjects for which more is better.
const GOOD: &str = r"profits?|sales|revenues?|earnings|eps|income|orders?|intake|margins?|results?|turnover|share|shares|price|stock|dividends?|flow|ebit|ebitda|ebita|rating|target|backlog|book|production|deliveries|volumes?|demand|growth|productivity|value|prices|traffic|passengers|capacity|outlook|guidance|forecast|estimate|efficiency|performance|base|subscribers|customers|users|return|ratio|trade|savings|visitors|output|market|exports|business|operations|liquidity|solvency|equity|assets|occupancy|load|yield|recommendation|expectations";
/// Subjects for which more is worse.
const BAD: &str = r"loss|losses|costs?|expenses?|debt|unemployment|layoffs?|lay-offs?|redundanc\w*|write-?downs?|impairments?|risks?|deficit|charges?|headcount|jobs|workforce|personnel|staff|employees|emissions|consumption|defaults?|provisions?|gearing";
const BAD_EVENTS: &str = r#"lay[- ]?offs?|laid off|job cuts|\bfined\b|\bfine of|bankrupt\w*|lawsuit|\bsued\b|profit warning|\bstrike\b|recall\w*|cartel|redundanc\w*|closure|shut down|close down|downgrad\w*|disappoint\w*|\bproblems?\b|difficult\w*|uncertaint\w*|loss-making|into the red|\bweak\w*|negotiations on (staff|personnel) reductions|temporary lay|\bcut (its|their) (forecast|guidance|outlook|estimate)"#;
const GOOD_EVENTS: &str = r#"\brecord\b|milestone|\bawarded?\b|\bwon\b|\bwins\b|succe\w*|\bstrong\w*|upgrad\w*|\bpleased\b|\bfavou?rable\b|\b(progressed|performed|went|succeeded|did|doing) well\b|\bbuy\b recommendation|"buy"|winning|into the black"#;
/// "X compared with Y", with either side possibly a profit, a loss or a
/// negative figure.
const COMPARISON: &str = r"(?:to )?(?:an? )?(?P<a>(?:net |operating |pre-?tax )?(?:profit|loss|negative))?[^.;]{0,40}?(?P<x>\d[\d,.]*)\s*(?:mn|mln|m|million|bn|bln|billion|eur|euro|euros|usd|pct|%|percent)?[^\d;]{0,25}?\b(?:compared (?:with|to)|versus|vs\.?|against)\b (?:an? )?(?:the )?(?P<b>(?:net |operating |pre-?tax )?(?:profit|loss|negative))?[^\d;]{0,20}?(?P<y>\d[\d,.]*)";
const LOSS_REPORTED: &str = r"\b(net|operating|pre-?tax|posted an?|reported an?|slipped to an?|swung to an?|widened) ?(net |operating )?loss";
const TURNED_TO_PROFIT: &str = r"swung to an? (net |operating )?profit|turned to (an? )?(net |operating )?profit|moved to an? (net |operating )?profit";

struct Patterns {
    token: Regex,
    up: Regex,
    down: Regex,
    good: Regex,
    bad: Regex,
    bad_events: Regex,
    good_events: Regex,
    comparison: Regex,
    loss_reported: Regex,
    turned_to_profit: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let whole = |alternatives: &str| Regex::new(&format!("^(?:{alternatives})$")).expect("valid pattern");
        let re = |p: &str| Regex::new(p).expect("valid pattern");
        Patterns {
            token: re(r"\d[\d,.]*(?: \d{3})*|[a-z][a-z\-']*"),
            up: whole(UP),
            down: whole(DOWN),
            good: whole(GOOD),
            bad: whole(BAD),
            bad_events: re(BAD_EVENTS),
            good_events: re(GOOD_EVENTS),
            comparison: re(COMPARISON),
            loss_reported: re(LOSS_REPORTED),
            turned_to_profit: re(TURNED_TO_PROFIT),
        }
    })
}

/// +1 when the subject nearest before word `i` (else shortly after it) is
/// one where more is better, -1 when more is worse, 0 when there is none.
/// `i` may be `words.len()`: then only the words before count.
fn subject(words: &[&str], i: usize) -> i32 {
    let p = patterns();
    let polarity = |w: &str| {
        if p.bad.is_match(w) {
            -1
        } else if p.good.is_match(w) {
            1
        } else {
            0
        }
    };
    let before = words[i.saturating_sub(11)..i].iter().rev();
    let after = words.iter().skip(i + 1).take(4);
    before
        .chain(after)
        .map(|w| polarity(w))
        .find(|&s| s != 0)
        .unwrap_or(0)
}

fn number(s: &str) -> Option<f64> {
    s.replace([',', ' '], "").trim_end_matches('.').parse().ok()
}

/// Evidence from "X compared with Y": positive when that is good news,
/// negative when bad, with the phrase that said so.
fn comparisons(lower: &str, found: &mut Vec<(i32, String)>) {
    let p = patterns();
    for m in p.comparison.captures_iter(lower) {
        let a = m.name("a").map_or("", |g| g.as_str());
        let b = m.name("b").map_or("", |g| g.as_str());
        let (Some(x), Some(y)) = (m.name("x"), m.name("y")) else {
            continue;
        };
        let is_loss = |s: &str| s.contains("loss") || s.contains("negative");
        let (vx, vy) = (number(x.as_str()), number(y.as_str()));
        let sign = if is_loss(b) {
            if is_loss(a) {
                // A loss against a loss: smaller is better.
                match (vx, vy) {
                    (Some(vx), Some(vy)) if vx != vy => {
                        if vx < vy {
                            1
                        } else {
                            -1
                        }
                    }
                    _ => 0,
                }
            } else {
                1
            }
        } else if is_loss(a) && b.contains("profit") {
            -1
        } else {
            // The subject is the nearest one before the first figure.
            let before: Vec<&str> = p
                .token
                .find_iter(&lower[..x.start()])
                .map(|t| t.as_str())
                .collect();
            let polarity = subject(&before, before.len());
            match (vx, vy) {
                (Some(vx), Some(vy)) if polarity != 0 && vx != vy => polarity * if vx > vy { 1 } else { -1 },
                _ => 0,
            }
        };
        if sign != 0 {
            found.push((sign, m.get(0).map_or("", |g| g.as_str()).trim().to_string()));
        }
    }
}

/// The cues for each sentiment in `text`, in [`SENTIMENTS`] order. Neutral
/// has no cues of its own: it is what a sentence without good or bad news
/// is.
pub fn sentiment_cues(text: &str) -> Vec<LabelCues> {
    let p = patterns();
    let lower = text.to_lowercase();
    let words: Vec<&str> = p.token.find_iter(&lower).map(|m| m.as_str()).collect();
    let (mut pos, mut neg) = (LabelCues::new("positive"), LabelCues::new("negative"));
    let mut loss_has_direction = false;
    for (i, w) in words.iter().enumerate() {
        let direction = if p.up.is_match(w) {
            1
        } else if p.down.is_match(w) {
            -1
        } else {
            0
        };
        if direction == 0 {
            continue;
        }
        let polarity = subject(&words, i);
        if polarity == 0 {
            continue;
        }
        loss_has_direction |= polarity < 0;
        let side = if direction * polarity > 0 {
            &mut pos
        } else {
            &mut neg
        };
        side.add(1.0, w);
    }
    let mut compared = Vec::new();
    comparisons(&lower, &mut compared);
    let net: i32 = compared.iter().map(|(s, _)| s).sum();
    // Comparisons pointing both ways cancel; what is left counts.
    let side = if net > 0 { &mut pos } else { &mut neg };
    for (_, phrase) in compared
        .iter()
        .filter(|(sign, _)| sign.signum() == net.signum())
        .take(net.unsigned_abs() as usize)
    {
        side.add(1.5, phrase);
    }
    for m in p.bad_events.find_iter(&lower) {
        neg.add(1.0, m.as_str());
    }
    for m in p.good_events.find_iter(&lower) {
        pos.add(0.7, m.as_str());
    }
    if !loss_has_direction
        && net == 0
        && let Some(m) = p.loss_reported.find(&lower)
    {
        neg.add(1.0, m.as_str());
    }
    if let Some(m) = p.turned_to_profit.find(&lower) {
        pos.add(1.5, m.as_str());
    }
    vec![pos, neg, LabelCues::new("neutral")]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(text: &str) -> &'static str {
        let c = sentiment_cues(text);
        if c[0].score > c[1].score {
            "positive"
        } else if c[1].score > c[0].score {
            "negative"
        } else {
            "neutral"
        }
    }

    #[test]
    fn direction_is_read_against_its_subject() {
        assert_eq!(
            label("Net profit rose to EUR 5.1 mn from EUR 3.2 mn."),
            "positive"
        );
        assert_eq!(label("Revenue fell 8 % in the third quarter."), "negative");
        assert_eq!(label("The operating loss narrowed to USD 2 million."), "positive");
        assert_eq!(label("Its net loss widened to 40 million dollars."), "negative");
        assert_eq!(label("Costs increased sharply during the year."), "negative");
    }

    #[test]
    fn comparisons_and_turnarounds_count() {
        assert_eq!(
            label("Net profit was 35.5 mln compared with 29.8 mln."),
            "positive"
        );
        assert_eq!(
            label("Operating profit totalled EUR 4.1 mn compared to EUR 6.0 mn a year earlier."),
            "negative"
        );
        assert_eq!(
            label("Cash flow was EUR 2 mn compared to a negative EUR 1 mn in 2008."),
            "positive"
        );
        assert_eq!(
            label("The group swung to a net profit of 3 mln euro from a loss of 1 mln euro."),
            "positive"
        );
        assert_eq!(
            label("The company posted a net loss of 12 million dollars compared with a profit of 5 million."),
            "negative"
        );
    }

    #[test]
    fn events_and_plain_facts() {
        assert_eq!(
            label("The company will lay off 120 workers at its plant."),
            "negative"
        );
        assert_eq!(label("The firm issued a profit warning on Monday."), "negative");
        assert_eq!(label("Orders reached a record high in December."), "positive");
        assert_eq!(
            label("The company is headquartered in Espoo and employs 300 people."),
            "neutral"
        );
        assert_eq!(label("It sells tools as well as garden furniture."), "neutral");
        let c = sentiment_cues("Sales rose 5 %.");
        assert_eq!(c[0].cues, vec!["rose".to_string()]);
    }
}
