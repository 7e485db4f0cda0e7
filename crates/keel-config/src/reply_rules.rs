//! Reply rules: a data file mapping destinations' replies to shaping actions.
//!
//! The built-in set (`reply-rules.toml` beside this crate's `Cargo.toml`, compiled in) covers
//! the documented throttling replies of the largest mailbox providers; `[shaping] reply_rules`
//! names a replacement file. The file format is documented at the top of the built-in file.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{ConfigError, ConfigErrors};
use crate::units::{Rate, parse_duration, parse_rate};

/// The built-in rules file.
pub const BUILTIN_REPLY_RULES: &str = include_str!("../reply-rules.toml");

/// What a rule does when it fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAction {
    /// Stop delivering from the egress source to the site.
    Suspend,
    /// Deliver at most this rate from the source to the site.
    Throttle(Rate),
    /// Fail every queued message for the site.
    Bounce,
}

/// A compiled regular expression (compared by its pattern).
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRule {
    pub name: String,
    /// Lower case, e.g. `.google.com`.
    pub mx_suffix: Option<String>,
    pub code: Option<u16>,
    /// Exact (`4.7.28`) or prefix ending in a dot (`4.7.`).
    pub enhanced: Option<String>,
    pub regex: Option<Pattern>,
    pub action: RuleAction,
    pub duration: Duration,
    /// Act only after this many matches within this window.
    pub trigger: Option<(u32, Duration)>,
}

impl ReplyRule {
    /// Whether a reply from a site with these MX hosts matches.
    pub fn matches(&self, mx_hosts: &[String], code: u16, enhanced: &str, text: &str) -> bool {
        if let Some(s) = &self.mx_suffix
            && !mx_hosts.iter().any(|h| {
                let h = h.trim_end_matches('.').to_ascii_lowercase();
                h.ends_with(s.as_str()) || h == s.trim_start_matches('.')
            })
        {
            return false;
        }
        if self.code.is_some_and(|c| c != code) {
            return false;
        }
        if let Some(e) = &self.enhanced {
            let ok = if e.ends_with('.') {
                enhanced.starts_with(e.as_str())
            } else {
                enhanced == e
            };
            if !ok {
                return false;
            }
        }
        if let Some(re) = &self.regex
            && !re.0.is_match(text)
        {
            return false;
        }
        true
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    mx_suffix: Option<String>,
    code: Option<u16>,
    enhanced: Option<String>,
    regex: Option<String>,
    action: Option<String>,
    duration: Option<String>,
    rate: Option<String>,
    trigger: Option<String>,
}

/// Parses a rules file; every problem is reported with its line and the rule's key.
pub fn parse_reply_rules(text: &str, file: &str) -> Result<Vec<ReplyRule>, ConfigErrors> {
    let err = |span: std::ops::Range<usize>, key: String, message: String| {
        let (line, column) = line_col(text, span.start);
        ConfigError {
            file: file.to_string(),
            line,
            column,
            key,
            message,
        }
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        ConfigErrors(vec![err(
            e.span().unwrap_or(0..0),
            String::new(),
            e.message().to_string(),
        )])
    })?;
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for (i, spanned) in raw.rule.iter().enumerate() {
        let r = spanned.get_ref();
        let at = spanned.span();
        let key = |k: &str| format!("rule[{i}].{k}");
        let mut fail = |k: &str, m: String| errors.push(err(at.clone(), key(k), m));
        let Some(name) = r.name.clone() else {
            fail("name", "missing key `name`".into());
            continue;
        };
        if r.code.is_none() && r.enhanced.is_none() && r.regex.is_none() {
            fail(
                "code",
                "a rule needs at least one of `code`, `enhanced`, `regex`".into(),
            );
        }
        let regex = match r.regex.as_deref().map(regex::Regex::new) {
            Some(Ok(re)) => Some(Pattern(re)),
            Some(Err(e)) => {
                fail("regex", format!("invalid regex: {e}"));
                None
            }
            None => None,
        };
        let duration = match r.duration.as_deref().map(parse_duration) {
            Some(Ok(d)) if !d.is_zero() => d,
            Some(Ok(_)) => {
                fail("duration", "must be greater than zero".into());
                Duration::from_secs(60)
            }
            Some(Err(e)) => {
                fail("duration", e.0);
                Duration::from_secs(60)
            }
            None => {
                fail(
                    "duration",
                    "missing key `duration` (how long the action lasts)".into(),
                );
                Duration::from_secs(60)
            }
        };
        let action = match r.action.as_deref() {
            Some("suspend") => Some(RuleAction::Suspend),
            Some("bounce") => Some(RuleAction::Bounce),
            Some("throttle") => match r.rate.as_deref().map(parse_rate) {
                Some(Ok(Some(rate))) => Some(RuleAction::Throttle(rate)),
                Some(Ok(None)) => {
                    fail("rate", "throttle needs a limit, not \"none\"".into());
                    None
                }
                Some(Err(e)) => {
                    fail("rate", e.0);
                    None
                }
                None => {
                    fail("rate", "throttle needs `rate`, e.g. \"100/h\"".into());
                    None
                }
            },
            Some(other) => {
                fail(
                    "action",
                    format!("unknown action {other:?}: expected suspend, throttle or bounce"),
                );
                None
            }
            None => {
                fail("action", "missing key `action`".into());
                None
            }
        };
        let trigger = match r.trigger.as_deref().map(parse_rate) {
            Some(Ok(Some(rate))) => Some((rate.count, rate.per)),
            Some(Ok(None)) => None,
            Some(Err(_)) => match r.trigger.as_deref().and_then(parse_trigger) {
                Some(t) => Some(t),
                None => {
                    fail(
                        "trigger",
                        format!(
                            "invalid trigger {:?}: expected \"<count>/<window>\" such as \"3/5m\"",
                            r.trigger.as_deref().unwrap_or("")
                        ),
                    );
                    None
                }
            },
            None => None,
        };
        if let Some(action) = action {
            rules.push(ReplyRule {
                name,
                mx_suffix: r
                    .mx_suffix
                    .as_ref()
                    .map(|s| s.trim_end_matches('.').to_ascii_lowercase()),
                code: r.code,
                enhanced: r.enhanced.clone(),
                regex,
                action,
                duration,
                trigger,
            });
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// `"3/5m"`: a count and a humantime window.
fn parse_trigger(text: &str) -> Option<(u32, Duration)> {
    let (n, w) = text.split_once('/')?;
    let n: u32 = n.trim().parse().ok().filter(|&n| n > 0)?;
    let w = parse_duration(w.trim()).ok().filter(|d| !d.is_zero())?;
    Some((n, w))
}

/// Loads a rules file from disk.
pub fn load_reply_rules(path: &Path) -> Result<Vec<ReplyRule>, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read reply rules file: {e}"),
        }])
    })?;
    parse_reply_rules(&text, &file)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_parse_and_match_real_replies() {
        let rules = parse_reply_rules(BUILTIN_REPLY_RULES, "builtin").unwrap();
        assert!(rules.len() >= 8);
        let first = |mx: &[&str], code, enh, text| {
            let mx: Vec<String> = mx.iter().map(|s| s.to_string()).collect();
            rules
                .iter()
                .find(|r| r.matches(&mx, code, enh, text))
                .map(|r| r.name.as_str())
        };
        let google = ["gmail-smtp-in.l.google.com"];
        assert_eq!(
            first(
                &google,
                421,
                "4.7.28",
                "Our system has detected an unusual rate of unsolicited mail originating from your IP address."
            ),
            Some("gmail-rate-limited")
        );
        assert_eq!(
            first(
                &google,
                421,
                "4.7.0",
                "Try again later, closing connection."
            ),
            Some("gmail-try-later")
        );
        let yahoo = ["mta5.am0.yahoodns.net"];
        assert_eq!(
            first(
                &yahoo,
                421,
                "4.7.0",
                "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"
            ),
            Some("yahoo-tss04")
        );
        let ms = ["example-com.mail.protection.outlook.com"];
        assert_eq!(
            first(
                &ms,
                451,
                "4.7.500",
                "Server busy. Please try again later from [192.0.2.1]. (S77714)"
            ),
            Some("microsoft-server-busy")
        );
        assert_eq!(
            first(
                &["mx.example.org"],
                421,
                "",
                "Too many connections from your host"
            ),
            Some("too-many-connections")
        );
        // An ordinary deferral matches nothing.
        assert_eq!(
            first(&google, 451, "4.3.0", "Temporary local problem"),
            None
        );
        // Google's rule does not fire for other providers' hosts.
        assert_eq!(first(&yahoo, 421, "4.7.28", "unusual rate"), None);
    }

    #[test]
    fn errors_name_rule_and_key() {
        let text = "[[rule]]\nname = \"x\"\nregex = \"(\"\naction = \"throttle\"\nduration = \"1h\"\n\n\
                    [[rule]]\nname = \"y\"\ncode = 421\naction = \"explode\"\nduration = \"0s\"\ntrigger = \"many\"\n";
        let e = parse_reply_rules(text, "rules.toml")
            .unwrap_err()
            .to_string();
        for needle in [
            "rules.toml:1:1: rule[0].regex: invalid regex",
            "rule[0].rate: throttle needs `rate`",
            "rule[1].action: unknown action \"explode\"",
            "rule[1].duration: must be greater than zero",
            "rule[1].trigger: invalid trigger \"many\"",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
        }
        let t = parse_reply_rules(
            "[[rule]]\nname = \"z\"\ncode = 421\naction = \"suspend\"\nduration = \"5m\"\ntrigger = \"3/5m\"\n",
            "r",
        )
        .unwrap();
        assert_eq!(t[0].trigger, Some((3, Duration::from_secs(300))));
    }
}
