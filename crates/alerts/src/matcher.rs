//! Label matchers: one condition on an alert's labels, as silences, routes and inhibitions
//! use them. Regular expressions are anchored at both ends; a label an alert lacks compares
//! as the empty string.
use std::collections::BTreeMap;

use regex::Regex;

/// How a matcher compares a label with its value (proto `MatchOperator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// A matcher, its regular expression compiled.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.label, self.op, &self.value) == (&other.label, other.op, &other.value)
    }
}

impl Matcher {
    /// Compiles the matcher; the error is the regex's message (no values are secret here).
    pub fn new(
        label: impl Into<String>,
        op: MatchOp,
        value: impl Into<String>,
    ) -> Result<Self, String> {
        let value = value.into();
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| e.to_string())?)
            }
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Self {
            label: label.into(),
            op,
            value,
            regex,
        })
    }

    /// Whether the labels meet this condition.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let actual = labels.get(&self.label).map_or("", String::as_str);
        self.matches_value(actual)
    }

    fn matches_value(&self, actual: &str) -> bool {
        match (&self.op, &self.regex) {
            (MatchOp::Equal, _) => actual == self.value,
            (MatchOp::NotEqual, _) => actual != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(actual),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(actual),
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }

    /// Whether it matches an alert that lacks the label: a matcher that does not can never
    /// cover every alert.
    pub fn matches_empty(&self) -> bool {
        self.matches_value("")
    }
}

/// Whether every matcher holds.
pub fn all_match(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// Matchers from a config's `match` (equal) and `match_re` (regex) tables.
pub fn from_tables(
    eq: &BTreeMap<String, String>,
    re: &BTreeMap<String, String>,
) -> Result<Vec<Matcher>, (String, String)> {
    let mut out = Vec::new();
    for (label, value) in eq {
        out.push(Matcher::new(label, MatchOp::Equal, value).map_err(|e| (label.clone(), e))?);
    }
    for (label, value) in re {
        out.push(Matcher::new(label, MatchOp::Regex, value).map_err(|e| (label.clone(), e))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn regex_is_anchored_and_missing_labels_are_empty() {
        let l = labels(&[("worker", "w10@host")]);
        let re = Matcher::new("worker", MatchOp::Regex, "w1.*").unwrap();
        assert!(re.matches(&l));
        let partial = Matcher::new("worker", MatchOp::Regex, "w1").unwrap();
        assert!(!partial.matches(&l), "a substring must not match: anchored");
        let not_re = Matcher::new("worker", MatchOp::NotRegex, "w1").unwrap();
        assert!(not_re.matches(&l));
        let missing = Matcher::new("queue", MatchOp::Equal, "").unwrap();
        assert!(missing.matches(&l));
        let ne = Matcher::new("queue", MatchOp::NotEqual, "q").unwrap();
        assert!(ne.matches(&l));
        assert!(Matcher::new("x", MatchOp::Regex, "(").is_err());
    }
}
