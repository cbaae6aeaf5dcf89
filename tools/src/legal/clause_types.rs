//! Cue phrases for clause types: the lexical half of the legal specialist's
//! `classify_clauses` (the other half is similarity to labelled examples,
//! computed by the specialist with a sentence encoder).

use std::sync::OnceLock;

use crate::cues::{CueSet, LabelCues};

/// The clause types, in the order the tools report them: CUAD's sixteen
/// categories spelled as CUAD spells them, then ours.
pub const CLAUSE_TYPES: [&str; 20] = [
    "Governing Law",
    "Anti-Assignment",
    "Cap on Liability",
    "Non-Compete",
    "Audit Rights",
    "License Grant",
    "Renewal Term",
    "Change of Control",
    "Post-Termination Services",
    "Revenue/Profit Sharing",
    "Termination for Convenience",
    "IP Ownership Assignment",
    "Exclusivity",
    "Warranty Duration",
    "Minimum Commitment",
    "Insurance",
    "Confidentiality",
    "Indemnification",
    "Payment Terms",
    "Other",
];

/// The label for a clause that fits none of the others.
pub const OTHER: &str = "Other";

type Table = &'static [(&'static str, &'static [(&'static str, f64)])];

const CUES: Table = &[
    (
        "Governing Law",
        &[(
            r"governed by|governing law|construed (and enforced )?in accordance with|laws of the (state|commonwealth|province|republic)|law of the state|choice of law|conflicts? of laws?",
            4.0,
        )],
    ),
    (
        "Anti-Assignment",
        &[
            (r"\bassign(s|ed|ment|able)?\b", 1.0),
            (
                r"(not|no) (\w+ ){0,3}(assign|transfer)|assign (this|the) agreement|assignment of this agreement|(assign|transfer)\w* (\w+ ){0,6}without",
                3.0,
            ),
            (r"\btransfer(red|able)?\b", 1.0),
            (r"without the (prior )?(written )?consent", 1.5),
            (r"sublicens", 0.8),
            (r"delegat", 1.0),
        ],
    ),
    (
        "Cap on Liability",
        &[
            (r"liab(le|ility)", 3.0),
            (r"consequential|incidental|special|punitive|indirect", 1.5),
            (r"damages", 1.0),
            (
                r"shall not exceed|in no event|aggregate|limited to|limitation",
                1.5,
            ),
            (r"sole (and exclusive )?remedy|exclusive remed", 2.0),
        ],
    ),
    (
        "Non-Compete",
        &[
            (r"compet(e|ing|itor|itive|ition)", 3.0),
            (r"non-?compet", 3.0),
            (r"solicit", 1.0),
        ],
    ),
    (
        "Audit Rights",
        &[
            (r"\baudit", 4.0),
            (r"inspect", 2.5),
            (r"books|records", 1.5),
            (r"examin", 1.0),
            (r"accountant|accounting firm", 1.0),
        ],
    ),
    (
        "License Grant",
        &[
            (r"licen[cs]e", 2.5),
            (r"hereby grants?|grants? to", 2.0),
            (
                r"(non-?)?exclusive,|royalty[- ]free|worldwide|perpetual|irrevocable",
                1.0,
            ),
            (r"right to (use|reproduce|distribute|make|sell)", 1.0),
        ],
    ),
    (
        "Renewal Term",
        &[
            (r"renew", 4.0),
            (r"automatically (extend|continue)", 3.0),
            (r"successive|additional (term|period)s?", 1.5),
            (r"extend(ed)? for", 1.5),
            (r"successor franchise", 3.0),
        ],
    ),
    (
        "Change of Control",
        &[
            (r"change (of|in) control", 5.0),
            (
                r"merger|merge[sd]?|consolidat|acquisition|acquire[sd]?|acquir",
                2.0,
            ),
            (
                r"(all|substantially all) (or substantially all )?of (its|the) (assets|stock|shares)",
                2.0,
            ),
            (r"voting (securities|stock|power)|beneficial own", 2.0),
            (r"ceases business", 1.0),
        ],
    ),
    (
        "Post-Termination Services",
        &[
            (
                r"(after|following|upon|on|survive|post|effective date of)[- ](the )?(date of )?(any )?(such )?(termination|expiration|expiry|cancellation)|termination or expiration|expiration or termination|after (the )?term|thereafter",
                3.0,
            ),
            (
                r"transition|wind[- ]down|sell[- ]off|continue to (provide|supply|support|sell)|return (or destroy|all)",
                2.0,
            ),
            (r"surviv", 1.5),
            (r"inventory|sell off", 1.0),
        ],
    ),
    (
        "Revenue/Profit Sharing",
        &[
            (r"royalt", 3.0),
            (r"revenue|profits?\b|percent|%", 1.5),
            (
                r"revenue share|share of (the )?(net )?(revenue|profit|sales)|profit shar|percent(age)? of (net |gross )?(sales|revenue|profit|receipts)|% of (net |gross |the )?(sales|revenue|profit|receipts)",
                3.0,
            ),
            (r"commission", 2.5),
            (
                r"net (sales|revenue|receipts|profits?)|gross (sales|revenue|receipts)",
                1.5,
            ),
        ],
    ),
    (
        "Termination for Convenience",
        &[
            (
                r"(may|right to|entitled to|option to|shall be entitled to) (\w+ ){0,2}terminat|terminat\w* (this|the) (agreement|contract|license)",
                2.5,
            ),
            (
                r"for (any reason|convenience|no reason)|without cause|at any time|for any or no reason",
                3.0,
            ),
            (r"(days|months)['’]? (prior )?(written )?notice", 1.5),
        ],
    ),
    (
        "IP Ownership Assignment",
        &[
            (r"(right,? title,? and interest|all right,? title)", 2.0),
            (r"\bown(s|ed|ership)?\b|property of|proprietary", 2.0),
            (r"hereby assigns?|shall assign|assign(s|ed)? (to|all)|vest", 2.0),
            (
                r"work(s)? made for hire|inventions?|innovations?|intellectual property|improvements|deliverables",
                1.5,
            ),
        ],
    ),
    (
        "Exclusivity",
        &[
            (r"exclusiv", 3.0),
            (
                r"sole (and exclusive )?(supplier|distributor|provider|source)|only from|solely from|shall not (purchase|sell|appoint|engage|use)|other than (from )?",
                1.5,
            ),
        ],
    ),
    (
        "Warranty Duration",
        &[
            (r"warrant", 3.0),
            (
                r"(period|months|years|days) (from|after|following) (the )?(date|delivery|shipment|installation|acceptance)|for a period of",
                1.5,
            ),
            (r"defects?|free from", 1.5),
        ],
    ),
    (
        "Minimum Commitment",
        &[
            (r"minimum|at least|no less than|not less than", 3.0),
            (r"purchase|order|spend|quota|volume|units", 1.0),
        ],
    ),
    (
        "Insurance",
        &[
            (r"insur(ance|ed|er|ers)", 5.0),
            (r"polic(y|ies)|coverage|additional insured|underwriter", 2.0),
            (r"\$[\d,]+ (per|each) (occurrence|claim|accident)", 2.0),
        ],
    ),
    (
        "Confidentiality",
        &[
            (r"confidential", 3.0),
            (r"disclos", 1.5),
            (r"trade secret|non-?disclosure|in (strict )?confidence", 2.0),
        ],
    ),
    (
        "Indemnification",
        &[
            (r"indemni", 4.0),
            (r"hold(s)? (\w+ )?harmless", 3.0),
            (r"defend", 1.5),
        ],
    ),
    (
        "Payment Terms",
        &[
            (r"invoice", 2.5),
            (r"(shall|will) pay|payable|payment", 1.0),
            (
                r"within \w+ \(?\d*\)? ?days|net \d+|late payment|interest at",
                1.5,
            ),
            (r"fees?|price", 1.0),
        ],
    ),
    ("Other", &[]),
];

fn cue_set() -> &'static CueSet {
    static SET: OnceLock<CueSet> = OnceLock::new();
    SET.get_or_init(|| CueSet::new(CUES))
}

/// The cue phrases for each clause type found in `text`, one entry per
/// type in [`CLAUSE_TYPES`] order (`Other` has no cues: it is what is left).
pub fn clause_cues(text: &str) -> Vec<LabelCues> {
    cue_set().score(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(text: &str) -> String {
        let cues = clause_cues(text);
        let best = cues
            .iter()
            .max_by(|a, b| a.score.total_cmp(&b.score))
            .expect("labels");
        if best.score == 0.0 {
            OTHER.to_string()
        } else {
            best.label.clone()
        }
    }

    #[test]
    fn every_type_has_an_entry_in_order() {
        let labels: Vec<String> = clause_cues("x").into_iter().map(|c| c.label).collect();
        assert_eq!(labels, CLAUSE_TYPES);
    }

    #[test]
    fn typical_clauses_get_their_type() {
        let cases = [
            (
                "This Lease is governed by the laws of the State of Oregon.",
                "Governing Law",
            ),
            (
                "Vendor shall carry general liability insurance of $1,000,000 per occurrence.",
                "Insurance",
            ),
            (
                "Tenant may not assign this Lease without the landlord's prior written consent.",
                "Anti-Assignment",
            ),
            (
                "Reseller shall pay Publisher a royalty equal to 12% of net revenue.",
                "Revenue/Profit Sharing",
            ),
            (
                "Either party may terminate this Agreement for convenience upon 60 days' written notice.",
                "Termination for Convenience",
            ),
            (
                "The Recipient shall hold all Confidential Information in strict confidence.",
                "Confidentiality",
            ),
            (
                "Licensee shall indemnify and hold Licensor harmless from all third-party claims.",
                "Indemnification",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(top(text), want, "{text}");
        }
    }

    #[test]
    fn a_clause_with_no_cue_is_other_and_cues_are_reported() {
        assert_eq!(top("This Agreement may be signed in counterparts."), OTHER);
        let cues = clause_cues("Licensor may audit the books of Licensee.");
        let audit = cues.iter().find(|c| c.label == "Audit Rights").expect("audit");
        assert!(audit.cues.contains(&"audit".to_string()), "{audit:?}");
        assert!(audit.cues.contains(&"books".to_string()), "{audit:?}");
    }
}
