//! `POST /api/v1/messages`: one transactional message over HTTP.
//!
//! Two forms, both JSON:
//! - **raw**: `{"mail_from": "a@x", "rcpt_to": ["b@y"], "raw": "From: ...\r\n\r\nbody"}` — an
//!   RFC 5322 message sent as it is (bare LF line ends are turned into CRLF, which is what
//!   JSON-producing clients usually send);
//! - **built**: the fields of a campaign request (`from`, `subject`, `text`/`html`, `headers`,
//!   `attachments`, `reply_to`, `tenant`) with exactly one entry in `recipients` (its `vars`
//!   fill the templates); `campaign` is optional here.
//!
//! The answer (`201`, `{"id", "message_id"?, "recipients"}`) comes only after the message is
//! durable, like a 250 after DATA; errors are `{"error", "field"}` (and `errors` with every
//! problem for the built form). Mail from this API is DKIM-signed when a key matches its From
//! domain: the API is authenticated, so it is our own client's mail.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{ApiError, AppState, authorize};
use crate::ingress::submit::{Submission, Submitter};

/// Set once the spool is open; until then the API answers 503.
pub type SubmitSlot = Arc<OnceLock<Submitter>>;

/// Largest request body accepted (the message plus JSON quoting).
pub const MAX_BODY: usize = 40 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    mail_from: String,
    rcpt_to: Vec<String>,
    raw: String,
}

pub async fn post_message(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, peer)?;
    let Some(submitter) = state.submit.get().cloned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting up: the spool is not open yet",
            None,
        ));
    };
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("invalid JSON body: {e}"), "body"))?;
    let is_raw = value.get("raw").is_some();
    let (submission, message_id) = if is_raw {
        (raw_submission(value, peer)?, None)
    } else {
        let (s, id) = built_submission(value, peer, &state.hostname)?;
        (s, Some(id))
    };
    let recipients = submission.rcpts.clone();
    let hostname = state.hostname.clone();
    let peer_ip = peer.ip();
    let trace = move |queue_id: &str, now: SystemTime| {
        keel_smtp::received::Trace {
            helo: "api-client",
            peer_ip,
            by: &hostname,
            protocol: "HTTP",
            id: queue_id,
            for_rcpt: (recipients.len() == 1).then(|| recipients[0].as_str()),
            date: &crate::events::rfc5322(now),
        }
        .header()
    };
    let rcpts = submission.rcpts.len();
    let id = submitter.submit(submission, trace).await.map_err(|e| {
        tracing::error!(error = %e, %peer, "cannot store a message from the API");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "local storage error; the message was not accepted, try again later",
            None,
        )
    })?;
    let mut answer = json!({ "id": id, "recipients": rcpts });
    if let Some(m) = message_id {
        answer["message_id"] = json!(m);
    }
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

fn address(field: &'static str, raw: &str) -> Result<String, ApiError> {
    keel_smtp::Address::parse(raw)
        .map(|a| a.to_string())
        .map_err(|e| ApiError::bad(format!("invalid address {raw:?}: {e}"), field))
}

fn raw_submission(value: Value, peer: std::net::SocketAddr) -> Result<Submission, ApiError> {
    let req: RawRequest = serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        let field = match msg.split('`').nth(1) {
            Some("mail_from") => "mail_from",
            Some("rcpt_to") => "rcpt_to",
            _ => "body",
        };
        ApiError::bad(format!("invalid request: {msg}"), field)
    })?;
    let sender = if req.mail_from.is_empty() {
        String::new()
    } else {
        address("mail_from", &req.mail_from)?
    };
    if req.rcpt_to.is_empty() {
        return Err(ApiError::bad("at least one recipient is needed", "rcpt_to"));
    }
    let mut rcpts = Vec::with_capacity(req.rcpt_to.len());
    for r in &req.rcpt_to {
        let a = address("rcpt_to", r)?;
        if !rcpts.contains(&a) {
            rcpts.push(a);
        }
    }
    let message = crlf(req.raw.as_bytes());
    if !message.windows(4).any(|w| w == b"\r\n\r\n") && !message.starts_with(b"\r\n") {
        return Err(ApiError::bad(
            "the message needs a header section ended by an empty line",
            "raw",
        ));
    }
    if let Some(n) = message
        .split(|&b| b == b'\n')
        .position(|line| line.len() > 1000)
    {
        return Err(ApiError::bad(
            format!(
                "line {} is longer than 1000 octets (RFC 5321 4.5.3.1.6); encode the body",
                n + 1
            ),
            "raw",
        ));
    }
    Ok(Submission {
        sender,
        rcpts,
        message,
        peer: peer.to_string(),
        sign: true,
        tenant: None,
    })
}

fn built_submission(
    mut value: Value,
    peer: std::net::SocketAddr,
    hostname: &str,
) -> Result<(Submission, String), ApiError> {
    // Transactional mail need not name a campaign.
    let campaign_given = value.get("campaign").is_some();
    if let Some(obj) = value.as_object_mut()
        && !campaign_given
    {
        obj.insert("campaign".into(), json!("transactional"));
    }
    let body = serde_json::to_vec(&value).unwrap_or_default();
    let request = keel_campaign::CampaignRequest::from_json(&body)
        .map_err(|e| ApiError::bad(e.to_string(), "body"))?;
    if request.recipients.len() != 1 {
        return Err(ApiError::bad(
            "a message has exactly one entry in `recipients` (use /api/v1/campaigns for more)",
            "recipients",
        ));
    }
    let validated = request
        .validate(&keel_campaign::RequestLimits::default())
        .map_err(|errors| {
            let all: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
            let first = errors.0.first();
            ApiError::bad(
                first.map_or_else(|| "invalid request".to_string(), |e| e.to_string()),
                "request",
            )
            .with_details(first.map(|e| e.field.clone()), all)
        })?;
    let Some(recipient) = validated.recipients.first() else {
        let reason = validated
            .rejected
            .first()
            .map_or_else(|| "recipient rejected".to_string(), |r| r.to_string());
        return Err(ApiError::bad(reason, "recipients[0].email"));
    };
    let settings = keel_campaign::BuildSettings {
        hostname: hostname.to_string(),
        verp: None,
        unsubscribe: None,
    };
    let factory = keel_campaign::MessageFactory::new(&validated.campaign, &settings);
    let built = factory
        .build(recipient, SystemTime::now())
        .map_err(|e| ApiError::bad(e.to_string(), "template"))?;
    let mut message = Vec::with_capacity(built.bytes.len() + 64);
    if campaign_given {
        message.extend_from_slice(
            format!("X-Keel-Campaign: {}\r\n", validated.campaign.id).as_bytes(),
        );
    }
    message.extend_from_slice(&built.bytes);
    Ok((
        Submission {
            sender: built.return_path,
            rcpts: vec![recipient.email.clone()],
            message,
            peer: peer.to_string(),
            sign: true,
            tenant: validated.campaign.tenant.clone(),
        },
        built.message_id,
    ))
}

/// Bare LF → CRLF (a CRLF stays as it is).
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 40);
    let mut prev = 0u8;
    for &b in bytes {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ends_become_crlf() {
        assert_eq!(crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
    }
}
