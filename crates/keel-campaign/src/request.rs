//! The campaign request as the API receives it, and its validation into a [`Campaign`].
//!
//! [`CampaignRequest`] mirrors the JSON of `POST /api/v1/campaigns` exactly; unknown fields are
//! errors (`deny_unknown_fields`), so a misspelt `reply-to` is refused instead of ignored.
//! [`CampaignRequest::validate`] checks every value and reports *all* problems, each naming its
//! field; what it returns is the checked, normalised [`Campaign`] the rest of the crate works
//! from (addresses normalised, attachments decoded, times parsed, templates compiled).
//!
//! Recipients may come inline (`recipients`) or as a separate stream
//! ([`crate::recipients::RecipientReader`]); inline ones are checked here with the same rules
//! (invalid address, duplicate in this request) and reported the same way, as rejections rather
//! than request errors, because one bad address among a million must not refuse the campaign.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::address::{check_address, check_display_name};
use crate::error::{FieldError, RequestErrors};
use crate::header_policy::{MAX_HEADERS, check_header};
use crate::recipients::{Recipient, Rejection, Screen};
use crate::template::{CampaignTemplate, TemplateLimits};

/// `POST /api/v1/campaigns`, field for field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    /// The campaign id, chosen by the client: the idempotency key.
    pub campaign: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub from: Mailbox,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// A template (minijinja), rendered without escaping.
    pub subject: String,
    /// Plain-text body template, rendered without escaping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// HTML body template, rendered with HTML auto-escaping of variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Custom headers, static text (not templates).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentInput>,
    /// Inline recipients; may be empty when they are streamed separately.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<RecipientInput>,
    /// RFC 3339 time before which nothing is sent, e.g. `2026-11-28T09:00:00Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<String>,
    /// How long after acceptance undelivered mail expires, e.g. `2d` (humantime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    #[serde(default)]
    pub track: Track,
}

/// `from`: an address and an optional display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mailbox {
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One attachment: file name, MIME type, base64 content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentInput {
    pub name: String,
    pub content_type: String,
    /// Standard base64 (RFC 4648 §4), padding optional, no line breaks needed.
    pub data: String,
}

/// One recipient: an address and the variables its templates are rendered with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientInput {
    pub email: String,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub vars: serde_json::Map<String, serde_json::Value>,
}

/// Open and click tracking (carried for the tracking issue; nothing here rewrites links yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Track {
    #[serde(default)]
    pub opens: bool,
    #[serde(default)]
    pub clicks: bool,
}

/// Size limits of a request. The defaults suit large campaigns while keeping one campaign's
/// fixed part (stored once in the spool) small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest campaign or tenant id (characters).
    pub max_id_chars: usize,
    /// Attachments, decoded, all together.
    pub max_attachments_bytes: usize,
    /// Most attachments.
    pub max_attachments: usize,
    /// Template sources and their rendering.
    pub template: TemplateLimits,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_id_chars: 128,
            max_attachments_bytes: 10 * 1024 * 1024,
            max_attachments: 20,
            template: TemplateLimits::default(),
        }
    }
}

/// A decoded attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// A validated campaign: everything needed to render and build its messages, except the
/// recipients (which stream past it).
#[derive(Debug)]
pub struct Campaign {
    pub id: String,
    pub tenant: Option<String>,
    /// Normalised From address.
    pub from_email: String,
    pub from_name: Option<String>,
    pub reply_to: Option<String>,
    /// Custom headers in name order.
    pub headers: Vec<(String, String)>,
    pub attachments: Vec<Attachment>,
    pub send_at: Option<SystemTime>,
    pub max_age: Option<Duration>,
    pub track: Track,
    /// Subject, text and HTML, compiled once.
    pub template: CampaignTemplate,
}

impl Campaign {
    /// The 64-bit key VERP and unsubscribe tokens carry for this campaign.
    pub fn key(&self) -> crate::token::CampaignKey {
        crate::token::CampaignKey::derive(self.tenant.as_deref(), &self.id)
    }
}

/// What validation returns: the campaign, the inline recipients that were accepted (in order,
/// numbered from 0) and those that were rejected with their reason.
#[derive(Debug)]
pub struct Validated {
    pub campaign: Campaign,
    pub recipients: Vec<Recipient>,
    pub rejected: Vec<Rejection>,
}

impl CampaignRequest {
    /// Parses a request body. A JSON or shape error (unknown field, wrong type) is one
    /// [`FieldError`] whose message has serde's line and column.
    pub fn from_json(body: &[u8]) -> Result<CampaignRequest, FieldError> {
        serde_json::from_slice(body)
            .map_err(|e| FieldError::new("", format!("invalid request: {e}")))
    }

    /// Checks every field; all problems are reported together.
    pub fn validate(self, limits: &RequestLimits) -> Result<Validated, RequestErrors> {
        let mut errors = Vec::new();
        let mut keep = |r: Result<(), FieldError>| {
            if let Err(e) = r {
                errors.push(e);
            }
        };

        keep(check_id("campaign", &self.campaign, limits.max_id_chars));
        if let Some(tenant) = &self.tenant {
            keep(check_id("tenant", tenant, limits.max_id_chars));
        }
        let from_email = check_address("from.email", &self.from.email);
        if let Some(name) = &self.from.name {
            keep(check_display_name("from.name", name));
        }
        let reply_to = self
            .reply_to
            .as_deref()
            .map(|r| check_address("reply_to", r))
            .transpose();

        if self.headers.len() > MAX_HEADERS {
            keep(Err(FieldError::new(
                "headers",
                format!("at most {MAX_HEADERS} custom headers"),
            )));
        }
        let mut seen_names = HashSet::new();
        for (name, value) in &self.headers {
            let field = format!("headers.{name}");
            keep(check_header(&field, name, value));
            if !seen_names.insert(name.to_ascii_lowercase()) {
                keep(Err(FieldError::new(
                    field,
                    "the same header is given twice (names are case-insensitive)",
                )));
            }
        }

        let attachments = decode_attachments(&self.attachments, limits, &mut errors);

        let send_at = self.send_at.as_deref().and_then(|t| {
            humantime::parse_rfc3339_weak(t)
                .map_err(|e| {
                    errors.push(FieldError::new(
                        "send_at",
                        format!("not an RFC 3339 time such as \"2026-11-28T09:00:00Z\": {e}"),
                    ))
                })
                .ok()
        });
        let max_age = self
            .max_age
            .as_deref()
            .and_then(|t| match humantime::parse_duration(t) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => {
                    errors.push(FieldError::new("max_age", "must be greater than zero"));
                    None
                }
                Err(e) => {
                    errors.push(FieldError::new(
                        "max_age",
                        format!("not a duration such as \"2d\" or \"36h\": {e}"),
                    ));
                    None
                }
            });

        if self.text.is_none() && self.html.is_none() {
            errors.push(FieldError::new(
                "text",
                "a campaign needs a body: `text`, `html` or both",
            ));
        }
        let template = CampaignTemplate::compile(
            &self.subject,
            self.text.as_deref(),
            self.html.as_deref(),
            &limits.template,
        );

        let (from_email, reply_to, template) = match (from_email, reply_to, template) {
            (Ok(f), Ok(r), Ok(t)) if errors.is_empty() => (f, r, t),
            (f, r, t) => {
                errors.extend(f.err());
                errors.extend(r.err());
                if let Err(template_errors) = t {
                    errors.extend(template_errors);
                }
                return Err(RequestErrors(errors));
            }
        };

        // Inline recipients: the same screen as a streamed list.
        let mut screen = Screen::new();
        let mut recipients = Vec::with_capacity(self.recipients.len());
        let mut rejected = Vec::new();
        for (i, r) in self.recipients.into_iter().enumerate() {
            match screen.check(i as u64, r) {
                Ok(recipient) => recipients.push(recipient),
                Err(rejection) => rejected.push(rejection),
            }
        }
        if recipients.is_empty() && !rejected.is_empty() {
            return Err(RequestErrors(vec![FieldError::new(
                "recipients",
                format!(
                    "none of the {} recipients can be used; the first: {}",
                    rejected.len(),
                    rejected[0]
                ),
            )]));
        }

        Ok(Validated {
            campaign: Campaign {
                id: self.campaign,
                tenant: self.tenant,
                from_email,
                from_name: self.from.name.filter(|n| !n.is_empty()),
                reply_to,
                headers: self.headers.into_iter().collect(),
                attachments,
                send_at,
                max_age,
                track: self.track,
                template,
            },
            recipients,
            rejected,
        })
    }
}

/// Campaign and tenant ids end up in logs, event fields and spool keys: printable, bounded.
fn check_id(field: &str, id: &str, max: usize) -> Result<(), FieldError> {
    if id.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if id.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(FieldError::new(
            field,
            "must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

fn decode_attachments(
    inputs: &[AttachmentInput],
    limits: &RequestLimits,
    errors: &mut Vec<FieldError>,
) -> Vec<Attachment> {
    if inputs.len() > limits.max_attachments {
        errors.push(FieldError::new(
            "attachments",
            format!("at most {} attachments", limits.max_attachments),
        ));
        return Vec::new();
    }
    let mut total = 0usize;
    let mut out = Vec::with_capacity(inputs.len());
    for (i, a) in inputs.iter().enumerate() {
        let field = |k: &str| format!("attachments[{i}].{k}");
        let mut ok = true;
        if a.name.is_empty()
            || a.name
                .chars()
                .any(|c| c.is_control() || c == '/' || c == '\\')
        {
            errors.push(FieldError::new(
                field("name"),
                "a file name without control characters or path separators",
            ));
            ok = false;
        }
        if !is_mime_type(&a.content_type) {
            errors.push(FieldError::new(
                field("content_type"),
                format!(
                    "{:?} is not a MIME type such as \"application/pdf\"",
                    a.content_type
                ),
            ));
            ok = false;
        }
        // Tolerate line-wrapped base64 (as `base64 FILE` writes it).
        let compact: String = a
            .data
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let data = match base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(compact.trim_end_matches('='))
        {
            Ok(data) => data,
            Err(e) => {
                errors.push(FieldError::new(
                    field("data"),
                    format!("invalid base64: {e}"),
                ));
                continue;
            }
        };
        total += data.len();
        if total > limits.max_attachments_bytes {
            errors.push(FieldError::new(
                field("data"),
                format!(
                    "attachments exceed {} bytes in all",
                    limits.max_attachments_bytes
                ),
            ));
            return out;
        }
        if ok {
            out.push(Attachment {
                name: a.name.clone(),
                content_type: a.content_type.to_ascii_lowercase(),
                data,
            });
        }
    }
    out
}

/// `type/subtype` with RFC 2045 token characters (parameters are not accepted here).
fn is_mime_type(s: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    matches!(s.split_once('/'), Some((t, sub)) if token(t) && token(sub))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipients::RejectionReason;

    pub(crate) fn sample() -> serde_json::Value {
        serde_json::json!({
            "campaign": "black-friday-2026",
            "tenant": "acme",
            "from": {"email": "news@acme.example", "name": "ACME"},
            "reply_to": "support@acme.example",
            "subject": "Hi {{ first_name }}",
            "text": "Hello {{ first_name }} ...",
            "html": "<p>Hello {{ first_name }}</p>",
            "headers": {"X-Campaign-Code": "bf26"},
            "attachments": [],
            "recipients": [{"email": "a@x.example", "vars": {"first_name": "Ann"}}],
            "send_at": "2026-11-28T09:00:00Z",
            "max_age": "2d",
            "track": {"opens": true, "clicks": false}
        })
    }

    fn validate(v: serde_json::Value) -> Result<Validated, RequestErrors> {
        let req = CampaignRequest::from_json(v.to_string().as_bytes()).expect("parses");
        req.validate(&RequestLimits::default())
    }

    #[test]
    fn the_issue_example_validates() {
        let v = validate(sample()).expect("valid");
        let c = &v.campaign;
        assert_eq!(c.id, "black-friday-2026");
        assert_eq!(c.from_email, "news@acme.example");
        assert_eq!(c.reply_to.as_deref(), Some("support@acme.example"));
        assert_eq!(c.max_age, Some(Duration::from_secs(2 * 86400)));
        assert_eq!(
            c.send_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_856_400))
        );
        assert!(c.track.opens);
        assert_eq!(v.recipients.len(), 1);
        assert_eq!(v.recipients[0].email, "a@x.example");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut s = sample();
        s["reply-to"] = "x@y.example".into();
        let e = CampaignRequest::from_json(s.to_string().as_bytes()).unwrap_err();
        assert!(e.message.contains("unknown field `reply-to`"), "{e}");
        let mut s = sample();
        s["recipients"][0]["name"] = "Ann".into();
        assert!(CampaignRequest::from_json(s.to_string().as_bytes()).is_err());
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut s = sample();
        s["campaign"] = "".into();
        s["from"]["email"] = "not an address".into();
        s["from"]["name"] = "ACME\r\nBcc: victim@y.example".into();
        s["reply_to"] = "nope".into();
        s["headers"] = serde_json::json!({
            "X-Ok": "fine",
            "X-Inject": "a\r\nBcc: victim@y.example",
            "From": "ceo@acme.example",
            "List-Unsubscribe": "<https://evil.example>"
        });
        s["attachments"] = serde_json::json!([
            {"name": "a.pdf", "content_type": "application/pdf", "data": "!!!"},
            {"name": "../b", "content_type": "pdf", "data": "aGk="}
        ]);
        s["send_at"] = "tomorrow".into();
        s["max_age"] = "0s".into();
        s["subject"] = "Hi {{ first_name".into();
        let e = validate(s).unwrap_err();
        for field in [
            "campaign",
            "from.email",
            "from.name",
            "reply_to",
            "headers.X-Inject",
            "headers.From",
            "headers.List-Unsubscribe",
            "attachments[0].data",
            "attachments[1].name",
            "attachments[1].content_type",
            "send_at",
            "max_age",
            "subject",
        ] {
            assert!(e.has(field), "no error for {field}: {e}");
        }
        assert!(!e.has("headers.X-Ok"));
    }

    #[test]
    fn a_body_is_required_and_attachments_decode() {
        let mut s = sample();
        s.as_object_mut().unwrap().remove("text");
        s.as_object_mut().unwrap().remove("html");
        assert!(validate(s).unwrap_err().has("text"));

        let mut s = sample();
        s["attachments"] = serde_json::json!([
            {"name": "hello.txt", "content_type": "Text/Plain", "data": "aGVs\nbG8="}
        ]);
        let v = validate(s).expect("valid");
        assert_eq!(v.campaign.attachments[0].data, b"hello");
        assert_eq!(v.campaign.attachments[0].content_type, "text/plain");
    }

    #[test]
    fn inline_recipients_are_screened_not_fatal() {
        let mut s = sample();
        s["recipients"] = serde_json::json!([
            {"email": "a@x.example"},
            {"email": "bad"},
            {"email": "A@X.example"},
            {"email": "b@x.example"}
        ]);
        let v = validate(s).expect("valid");
        assert_eq!(v.recipients.len(), 2);
        assert_eq!(v.recipients[1].index, 3);
        assert_eq!(v.rejected.len(), 2);
        assert_eq!(v.rejected[0].field(), "recipients[1].email");
        assert!(matches!(v.rejected[1].reason, RejectionReason::Duplicate));

        let mut s = sample();
        s["recipients"] = serde_json::json!([{"email": "bad"}]);
        assert!(validate(s).unwrap_err().has("recipients"));
    }
}
