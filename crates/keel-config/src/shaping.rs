//! `[shaping]` and `[egress]`: how fast and from where Keel delivers.
//!
//! Traffic shaping limits apply per (egress source, site), where a site is a destination's MX
//! host set. `[shaping.default]` holds the limits every site starts from (its keys default to
//! the `[delivery]` values of the same name); each matching `[[shaping.rule]]`, in file order,
//! overrides the keys it sets, so later, more specific rules win.
//!
//! Egress sources are local addresses (and EHLO names) outbound connections come from; pools
//! spread mail over sources by weight. Without any `[[egress.source]]` Keel uses one implicit
//! source, `default`, bound to no particular address; without a pool named `default` there is
//! one holding every source with weight 1.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::config::DeliveryConfig;
use crate::raw::Int;
use crate::reply_rules::{BUILTIN_REPLY_RULES, ReplyRule, load_reply_rules, parse_reply_rules};
use crate::units::{Rate, parse_rate};
use crate::validate::Validator;

// ---- the file as written ------------------------------------------------

/// `[shaping]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawShaping {
    pub(crate) default: Option<RawLimits>,
    pub(crate) rule: Option<Vec<Spanned<RawRule>>>,
    pub(crate) reply_rules: Option<Spanned<String>>,
    pub(crate) adaptive: Option<Spanned<bool>>,
    pub(crate) max_ready: Option<Spanned<Int>>,
    pub(crate) max_ready_bytes: Option<Spanned<crate::raw::RawSize>>,
}

/// `[shaping.default]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawLimits {
    pub(crate) max_connections: Option<Spanned<Int>>,
    pub(crate) max_messages_per_connection: Option<Spanned<Int>>,
    pub(crate) max_message_rate: Option<Spanned<String>>,
    pub(crate) max_connection_rate: Option<Spanned<String>>,
}

/// One `[[shaping.rule]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawRule {
    pub(crate) domain: Option<Spanned<String>>,
    pub(crate) mx_suffix: Option<Spanned<String>>,
    pub(crate) max_connections: Option<Spanned<Int>>,
    pub(crate) max_messages_per_connection: Option<Spanned<Int>>,
    pub(crate) max_message_rate: Option<Spanned<String>>,
    pub(crate) max_connection_rate: Option<Spanned<String>>,
}

/// `[egress]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawEgress {
    pub(crate) source: Option<Vec<Spanned<RawSource>>>,
    pub(crate) pool: Option<Vec<Spanned<RawPool>>>,
}

/// One `[[egress.source]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawSource {
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) bind: Option<Spanned<String>>,
    pub(crate) ehlo: Option<Spanned<String>>,
    pub(crate) warmup: Option<Vec<Spanned<String>>>,
}

/// One `[[egress.pool]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawPool {
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) sources: Option<Vec<Spanned<RawPoolMember>>>,
}

/// `{ name = "ip1", weight = 2 }` in a pool's `sources`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { name = \"ip1\", weight = 2 }"
)]
pub(crate) struct RawPoolMember {
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) weight: Option<Spanned<Int>>,
}

// ---- the runtime form -----------------------------------------------------

/// Delivery limits for one (egress source, site).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Most messages over one connection before it is closed.
    pub max_messages_per_connection: usize,
    /// Most messages started per unit of time; `None`: unlimited.
    pub max_message_rate: Option<Rate>,
    /// Most new connections per unit of time; `None`: unlimited.
    pub max_connection_rate: Option<Rate>,
}

/// Which sites a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteMatch {
    /// Mail for exactly this recipient domain (lower case).
    Domain(String),
    /// Sites with an MX host name ending in this suffix (lower case, e.g. `.google.com`).
    MxSuffix(String),
}

/// One `[[shaping.rule]]`: the keys it sets override the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapingRule {
    pub matcher: SiteMatch,
    pub max_connections: Option<usize>,
    pub max_messages_per_connection: Option<usize>,
    /// `Some(None)`: explicitly unlimited.
    pub max_message_rate: Option<Option<Rate>>,
    pub max_connection_rate: Option<Option<Rate>>,
}

/// `[shaping]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapingConfig {
    pub default: Limits,
    pub rules: Vec<ShapingRule>,
    /// Reply rules (the built-in set unless `reply_rules` names a file).
    pub reply_rules: Vec<ReplyRule>,
    /// Adaptive shaping (AIMD on throttling replies); on by default.
    pub adaptive: bool,
    /// Most jobs handed to one ready queue at a time; more wait in the scheduled queue.
    pub max_ready: usize,
    /// Most message bytes handed to one ready queue at a time (at least one job always goes).
    pub max_ready_bytes: u64,
}

/// Default for `shaping.max_ready_bytes`: 512 MiB.
pub const DEFAULT_MAX_READY_BYTES: u64 = 512 << 20;

/// Default for `shaping.max_ready`.
pub const DEFAULT_MAX_READY: usize = 10_000;

fn builtin_rules() -> Vec<ReplyRule> {
    // The built-in file is tested to parse; an error here is a build defect.
    parse_reply_rules(BUILTIN_REPLY_RULES, "built-in reply-rules.toml").unwrap_or_default()
}

impl ShapingConfig {
    /// The limits for a site reached for `domain` through `mx_hosts`: the defaults with every
    /// matching rule applied in file order.
    pub fn limits_for(&self, domain: &str, mx_hosts: &[String]) -> Limits {
        let mut limits = self.default;
        for rule in &self.rules {
            let hit = match &rule.matcher {
                SiteMatch::Domain(d) => d.eq_ignore_ascii_case(domain),
                SiteMatch::MxSuffix(s) => mx_hosts.iter().any(|h| {
                    let h = h.trim_end_matches('.').to_ascii_lowercase();
                    h.ends_with(s.as_str()) || h == s.trim_start_matches('.')
                }),
            };
            if !hit {
                continue;
            }
            if let Some(v) = rule.max_connections {
                limits.max_connections = v;
            }
            if let Some(v) = rule.max_messages_per_connection {
                limits.max_messages_per_connection = v;
            }
            if let Some(v) = rule.max_message_rate {
                limits.max_message_rate = v;
            }
            if let Some(v) = rule.max_connection_rate {
                limits.max_connection_rate = v;
            }
        }
        limits
    }

    /// Defaults taken from `[delivery]`, no rules.
    pub fn from_delivery(delivery: &DeliveryConfig) -> Self {
        ShapingConfig {
            default: Limits {
                max_connections: delivery.max_connections_per_destination,
                max_messages_per_connection: delivery.max_messages_per_connection,
                max_message_rate: None,
                max_connection_rate: None,
            },
            rules: Vec::new(),
            reply_rules: builtin_rules(),
            adaptive: true,
            max_ready: DEFAULT_MAX_READY,
            max_ready_bytes: DEFAULT_MAX_READY_BYTES,
        }
    }
}

/// One `[[egress.source]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressSource {
    pub name: String,
    /// Local address outbound connections bind to; `None`: the system's choice.
    pub bind: Option<IpAddr>,
    /// EHLO name; `None`: `smtp.hostname`.
    pub ehlo: Option<String>,
    /// Daily caps for the first days of use, one per day; unlimited after the list.
    pub warmup: Vec<Rate>,
}

/// One `[[egress.pool]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPool {
    pub name: String,
    /// (source name, weight ≥ 1), every name a configured source.
    pub members: Vec<(String, u32)>,
}

/// `[egress]`, completed with the implicit `default` source and pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressConfig {
    pub sources: Vec<EgressSource>,
    pub pools: Vec<EgressPool>,
}

/// Name of the implicit source and of the pool used when a message names none.
pub const DEFAULT_EGRESS: &str = "default";

impl Default for EgressConfig {
    fn default() -> Self {
        Self::complete(Vec::new(), Vec::new())
    }
}

impl EgressConfig {
    fn complete(mut sources: Vec<EgressSource>, mut pools: Vec<EgressPool>) -> Self {
        if sources.is_empty() {
            sources.push(EgressSource {
                name: DEFAULT_EGRESS.into(),
                bind: None,
                ehlo: None,
                warmup: Vec::new(),
            });
        }
        if !pools.iter().any(|p| p.name == DEFAULT_EGRESS) {
            pools.push(EgressPool {
                name: DEFAULT_EGRESS.into(),
                members: sources.iter().map(|s| (s.name.clone(), 1)).collect(),
            });
        }
        EgressConfig { sources, pools }
    }

    pub fn source(&self, name: &str) -> Option<&EgressSource> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn pool(&self, name: &str) -> Option<&EgressPool> {
        self.pools.iter().find(|p| p.name == name)
    }
}

// ---- validation -------------------------------------------------------------

impl Validator<'_, '_> {
    fn rate(&mut self, value: &Spanned<String>, key: &str) -> Option<Option<Rate>> {
        self.parse(value, key, parse_rate)
    }

    pub(crate) fn shaping(&mut self, raw: &RawShaping, delivery: &DeliveryConfig) -> ShapingConfig {
        let mut shaping = ShapingConfig::from_delivery(delivery);
        if let Some(d) = &raw.default {
            let l = &mut shaping.default;
            l.max_connections = self.count(
                d.max_connections.as_ref(),
                "shaping.default.max_connections",
                l.max_connections,
            );
            l.max_messages_per_connection = self.count(
                d.max_messages_per_connection.as_ref(),
                "shaping.default.max_messages_per_connection",
                l.max_messages_per_connection,
            );
            if let Some(r) = &d.max_message_rate {
                l.max_message_rate = self
                    .rate(r, "shaping.default.max_message_rate")
                    .unwrap_or(None);
            }
            if let Some(r) = &d.max_connection_rate {
                l.max_connection_rate = self
                    .rate(r, "shaping.default.max_connection_rate")
                    .unwrap_or(None);
            }
        }
        if let Some(path) = &raw.reply_rules {
            match load_reply_rules(Path::new(path.get_ref())) {
                Ok(rules) => shaping.reply_rules = rules,
                Err(errors) => self.error(
                    path.span(),
                    "shaping.reply_rules",
                    format!("the reply rules file has errors:\n{errors}"),
                ),
            }
        }
        if let Some(a) = &raw.adaptive {
            shaping.adaptive = *a.get_ref();
        }
        shaping.max_ready = self.count(
            raw.max_ready.as_ref(),
            "shaping.max_ready",
            DEFAULT_MAX_READY,
        );
        shaping.max_ready_bytes = self.size(
            raw.max_ready_bytes.as_ref(),
            "shaping.max_ready_bytes",
            DEFAULT_MAX_READY_BYTES,
        );
        for (i, rule) in raw.rule.iter().flatten().enumerate() {
            let key = format!("shaping.rule[{i}]");
            let r = rule.get_ref();
            let matcher = match (&r.domain, &r.mx_suffix) {
                (Some(d), None) => Some(SiteMatch::Domain(
                    d.get_ref().trim_end_matches('.').to_ascii_lowercase(),
                )),
                (None, Some(s)) if !s.get_ref().trim().is_empty() => Some(SiteMatch::MxSuffix(
                    s.get_ref().trim_end_matches('.').to_ascii_lowercase(),
                )),
                (None, Some(s)) => {
                    self.error(s.span(), &format!("{key}.mx_suffix"), "must not be empty");
                    None
                }
                _ => {
                    self.error(
                        rule.span(),
                        &key,
                        "a rule needs exactly one of `domain` or `mx_suffix`",
                    );
                    None
                }
            };
            let max_connections = r
                .max_connections
                .as_ref()
                .map(|v| self.count(Some(v), &format!("{key}.max_connections"), 1));
            let max_messages_per_connection = r
                .max_messages_per_connection
                .as_ref()
                .map(|v| self.count(Some(v), &format!("{key}.max_messages_per_connection"), 1));
            let max_message_rate = r
                .max_message_rate
                .as_ref()
                .and_then(|v| self.rate(v, &format!("{key}.max_message_rate")));
            let max_connection_rate = r
                .max_connection_rate
                .as_ref()
                .and_then(|v| self.rate(v, &format!("{key}.max_connection_rate")));
            if let Some(matcher) = matcher {
                shaping.rules.push(ShapingRule {
                    matcher,
                    max_connections,
                    max_messages_per_connection,
                    max_message_rate,
                    max_connection_rate,
                });
            }
        }
        shaping
    }

    pub(crate) fn egress(&mut self, raw: &RawEgress) -> EgressConfig {
        let mut sources = Vec::new();
        let mut names = HashSet::new();
        for (i, s) in raw.source.iter().flatten().enumerate() {
            let key = format!("egress.source[{i}]");
            let r = s.get_ref();
            let Some(name) = &r.name else {
                self.error(s.span(), &key, "missing key `name`");
                continue;
            };
            if !names.insert(name.get_ref().clone()) {
                self.error(
                    name.span(),
                    &format!("{key}.name"),
                    format!("duplicate egress source {:?}", name.get_ref()),
                );
            }
            let bind = r.bind.as_ref().and_then(|b| {
                self.parse(b, &format!("{key}.bind"), |t| {
                    t.parse::<IpAddr>().map_err(|_| {
                        crate::error::InvalidValue(format!(
                            "invalid local address {t:?}: expected an IP address such as \"192.0.2.10\""
                        ))
                    })
                })
            });
            let ehlo = r.ehlo.as_ref().map(|e| self.hostname(e));
            let warmup = r
                .warmup
                .iter()
                .flatten()
                .enumerate()
                .filter_map(|(j, w)| {
                    let k = format!("{key}.warmup[{j}]");
                    match self.rate(w, &k) {
                        Some(Some(rate)) => Some(rate),
                        Some(None) => {
                            self.error(w.span(), &k, "a warm-up step needs a limit, not \"none\"");
                            None
                        }
                        None => None,
                    }
                })
                .collect();
            sources.push(EgressSource {
                name: name.get_ref().clone(),
                bind,
                ehlo,
                warmup,
            });
        }
        let mut pools = Vec::new();
        let mut pool_names = HashSet::new();
        for (i, p) in raw.pool.iter().flatten().enumerate() {
            let key = format!("egress.pool[{i}]");
            let r = p.get_ref();
            let Some(name) = &r.name else {
                self.error(p.span(), &key, "missing key `name`");
                continue;
            };
            if !pool_names.insert(name.get_ref().clone()) {
                self.error(
                    name.span(),
                    &format!("{key}.name"),
                    format!("duplicate egress pool {:?}", name.get_ref()),
                );
            }
            let mut members = Vec::new();
            for (j, m) in r.sources.iter().flatten().enumerate() {
                let mkey = format!("{key}.sources[{j}]");
                let Some(member) = &m.get_ref().name else {
                    self.error(m.span(), &mkey, "missing key `name`");
                    continue;
                };
                let known = if sources.is_empty() {
                    member.get_ref() == DEFAULT_EGRESS
                } else {
                    names.contains(member.get_ref())
                };
                if !known {
                    self.error(
                        member.span(),
                        &format!("{mkey}.name"),
                        format!("no egress source is named {:?}", member.get_ref()),
                    );
                    continue;
                }
                let weight = m.get_ref().weight.as_ref().map_or(1, |w| {
                    self.count(Some(w), &format!("{mkey}.weight"), 1) as u32
                });
                members.push((member.get_ref().clone(), weight));
            }
            if members.is_empty() {
                self.error(p.span(), &key, "a pool needs at least one source");
                continue;
            }
            pools.push(EgressPool {
                name: name.get_ref().clone(),
                members,
            });
        }
        EgressConfig::complete(sources, pools)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{Config, DEFAULT_EGRESS, SiteMatch};

    const EXAMPLE: &str = r#"
[delivery]
max_connections_per_destination = 20

[shaping.default]
max_messages_per_connection = 50
max_message_rate = "none"

[[shaping.rule]]
mx_suffix = ".google.com"
max_connections = 10
max_message_rate = "3000/h"

[[shaping.rule]]
domain = "Yahoo.com."
max_connection_rate = "5/s"

[[egress.source]]
name = "ip1"
bind = "127.0.0.2"
ehlo = "mta1.example.com"

[[egress.source]]
name = "ip2"
bind = "127.0.0.3"
ehlo = "mta2.example.com"
warmup = ["1000/day", "5000/day"]

[[egress.pool]]
name = "default"
sources = [{ name = "ip1", weight = 2 }, { name = "ip2", weight = 1 }]
"#;

    #[test]
    fn parses_shaping_and_egress() {
        let c = Config::parse(EXAMPLE, "keel.toml").unwrap();
        assert_eq!(c.shaping.default.max_connections, 20);
        assert_eq!(c.shaping.default.max_messages_per_connection, 50);
        assert_eq!(c.shaping.rules.len(), 2);
        assert_eq!(
            c.shaping.rules[1].matcher,
            SiteMatch::Domain("yahoo.com".into())
        );
        let g = c
            .shaping
            .limits_for("gmail.com", &["alt1.gmail-smtp-in.l.google.com".into()]);
        assert_eq!(g.max_connections, 10);
        assert_eq!(g.max_message_rate.unwrap().to_string(), "3000/h");
        assert_eq!(g.max_messages_per_connection, 50);
        let y = c
            .shaping
            .limits_for("yahoo.com", &["mta5.am0.yahoodns.net".into()]);
        assert_eq!(y.max_connections, 20);
        assert_eq!(
            y.max_connection_rate.unwrap().interval(),
            Duration::from_millis(200)
        );
        let other = c
            .shaping
            .limits_for("example.org", &["mx.example.org".into()]);
        assert_eq!(other, c.shaping.default);

        assert_eq!(c.egress.sources.len(), 2);
        assert_eq!(c.egress.sources[0].bind, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(c.egress.sources[1].warmup.len(), 2);
        let pool = c.egress.pool(DEFAULT_EGRESS).unwrap();
        assert_eq!(pool.members, vec![("ip1".into(), 2), ("ip2".into(), 1)]);
    }

    #[test]
    fn api_token_file_and_ready_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "# ops\n0123456789abcdef-one\n\nshort\n").unwrap();
        let text = format!(
            "[http]\napi_tokens = [\"0123456789abcdef-inline\"]\napi_token_file = \"{}\"\n\n[shaping]\nmax_ready_bytes = \"64MB\"\n",
            tokens.display()
        );
        let e = Config::parse(&text, "k.toml").unwrap_err().to_string();
        assert!(e.contains("http.api_token_file: line 4 of"), "{e}");
        std::fs::write(&tokens, "0123456789abcdef-one\n").unwrap();
        let c = Config::parse(&text, "k.toml").unwrap();
        assert_eq!(
            c.http.api_tokens,
            ["0123456789abcdef-inline", "0123456789abcdef-one"]
        );
        assert_eq!(c.shaping.max_ready_bytes, 64 << 20);
    }

    #[test]
    fn defaults_have_one_implicit_source_and_pool() {
        let c = Config::default();
        assert_eq!(c.egress.sources.len(), 1);
        assert_eq!(c.egress.sources[0].name, DEFAULT_EGRESS);
        assert_eq!(c.egress.pool(DEFAULT_EGRESS).unwrap().members.len(), 1);
        assert_eq!(c.shaping.default.max_connections, 32);
        assert!(c.http.api_tokens.is_empty());
    }

    #[test]
    fn reports_shaping_and_egress_errors_with_keys() {
        let text = "[shaping.default]\nmax_message_rate = \"fast\"\n\n[[shaping.rule]]\nmax_connections = 2\n\n\
                    [[egress.source]]\nname = \"a\"\nbind = \"not-an-ip\"\n\n[[egress.pool]]\nname = \"p\"\n\
                    sources = [{ name = \"nope\" }]\n\n[http]\napi_tokens = [\"short\"]\n";
        let errors = Config::parse(text, "k.toml").unwrap_err().to_string();
        for needle in [
            "k.toml:2:20: shaping.default.max_message_rate: invalid rate \"fast\"",
            "shaping.rule[0]: a rule needs exactly one of `domain` or `mx_suffix`",
            "k.toml:9:8: egress.source[0].bind: invalid local address",
            "egress.pool[0].sources[0].name: no egress source is named \"nope\"",
            "http.api_tokens[0]: an API token must be at least 16 characters",
        ] {
            assert!(errors.contains(needle), "missing {needle:?} in:\n{errors}");
        }
    }
}
