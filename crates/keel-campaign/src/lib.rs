//! Campaign mail for Keel: from one request — a template and a list of recipients — to one
//! personalised, ready-to-sign RFC 5322 message per recipient.
//!
//! This crate is the pure logic of campaign injection (no I/O, no tokio); the HTTP API and the
//! spool wire it in. The pipeline:
//!
//! 1. [`CampaignRequest`] — the `POST /api/v1/campaigns` JSON, serde with
//!    `deny_unknown_fields` — is [validated](CampaignRequest::validate) into a [`Campaign`]:
//!    every problem reported at once with its field (`from.email`, `headers.X-Code`...);
//!    templates compiled once ([`CampaignTemplate`]).
//! 2. Recipients come inline or through a [`RecipientReader`] (JSON array or NDJSON, streamed,
//!    bounded memory); each is screened (valid address, not a duplicate) or rejected with its
//!    index and reason ([`Rejection`]).
//! 3. Per recipient, [`MessageFactory::build`] renders subject, text and HTML (strict
//!    variables, HTML escaping in `html` only, a fuel budget) and builds the MIME message with
//!    mail-builder, including a per-recipient VERP return path ([`Verp`]) and one-click
//!    unsubscribe headers ([`Unsubscribe`]), both carrying HMAC-signed tokens ([`token`]).
//! 4. The daemon DKIM-signs the bytes (keel-dkim) and spools or sends them.
//!
//! ```
//! use keel_campaign::{BuildSettings, CampaignRequest, MessageFactory, RequestLimits};
//!
//! let request = CampaignRequest::from_json(br#"{
//!     "campaign": "welcome", "from": {"email": "news@acme.example", "name": "ACME"},
//!     "subject": "Hi {{ first_name }}", "text": "Hello {{ first_name }}!\n",
//!     "recipients": [{"email": "ann@x.example", "vars": {"first_name": "Ann"}}]
//! }"#).unwrap();
//! let validated = request.validate(&RequestLimits::default()).unwrap();
//! let settings = BuildSettings { hostname: "mta.acme.example".into(), verp: None, unsubscribe: None };
//! let factory = MessageFactory::new(&validated.campaign, &settings);
//! let message = factory.build(&validated.recipients[0], std::time::SystemTime::now()).unwrap();
//! let text = String::from_utf8(message.bytes).unwrap();
//! assert!(text.contains("Subject: Hi Ann\r\n"));
//! assert!(text.contains("Hello Ann!"));
//! ```
#![forbid(unsafe_code)]

pub mod address;
mod error;
pub mod header_policy;
mod message;
pub mod recipients;
mod request;
pub mod template;
pub mod token;
mod unsubscribe;
mod verp;

pub use error::{FieldError, RequestErrors};
pub use message::{BuildSettings, BuiltMessage, MessageFactory};
pub use recipients::{
    Format, Item, ReaderLimits, Recipient, RecipientReader, Rejection, RejectionReason, Screen,
    StreamError,
};
pub use request::{
    Attachment, AttachmentInput, Campaign, CampaignRequest, Mailbox, RecipientInput, RequestLimits,
    Track, Validated,
};
pub use template::{
    CampaignTemplate, Part, RenderError, RenderErrorKind, Rendered, TemplateLimits,
};
pub use token::{CampaignKey, TokenError, TokenKey};
pub use unsubscribe::{MAILTO_PREFIX, Unsubscribe, UnsubscribeTarget};
pub use verp::{VERP_PREFIX, Verp, VerpError};
