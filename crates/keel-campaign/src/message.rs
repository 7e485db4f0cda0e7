//! Building one recipient's message: MIME with mail-builder, headers Keel owns, return path.
//!
//! Structure: `text/plain` or `text/html` alone; `multipart/alternative` (text first, then
//! HTML, the order RFC 2046 §5.1.4 asks for: least to most faithful) when both; wrapped in
//! `multipart/mixed` with the attachments when there are any. mail-builder picks each part's
//! transfer encoding from its content (7bit for short ASCII lines, else quoted-printable or
//! base64, whichever is shorter), so no body line exceeds 78 characters, far inside RFC 5322's
//! 998; header fields are folded and non-ASCII subjects and display names are RFC 2047 encoded.
//!
//! Headers, in this order: Date, From, Reply-To, To, Subject, Message-ID
//! (`<uuid-v7@hostname>`, unique per message), List-Unsubscribe and List-Unsubscribe-Post when
//! unsubscribe is configured, the request's custom headers, then MIME-Version and the
//! Content-* fields. Every header DKIM signing covers ([`keel_dkim::SIGNED_HEADERS`] in the
//! daemon) is among them.
//!
//! The envelope sender is the VERP address when a bounce domain is configured, else the From
//! address.

use std::borrow::Cow;
use std::time::SystemTime;

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::headers::url::URL;

use crate::recipients::Recipient;
use crate::request::Campaign;
use crate::template::{RenderError, Rendered};
use crate::token::CampaignKey;
use crate::unsubscribe::Unsubscribe;
use crate::verp::Verp;

/// Keel's side of message construction: what the configuration decides, not the request.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// The right-hand side of Message-IDs: Keel's host name (`smtp.hostname`).
    pub hostname: String,
    /// VERP return paths, when a bounce domain is configured.
    pub verp: Option<Verp>,
    /// One-click unsubscribe, when `[tracking]` is configured. Campaign mail to the large
    /// providers needs it (their bulk-sender rules), so the API should refuse campaigns
    /// without it in production.
    pub unsubscribe: Option<Unsubscribe>,
}

/// One built message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltMessage {
    /// The envelope sender (`MAIL FROM`).
    pub return_path: String,
    /// The Message-ID, without angle brackets.
    pub message_id: String,
    /// The RFC 5322 message, CRLF line ends, ready to sign and send.
    pub bytes: Vec<u8>,
}

/// Renders and builds one campaign's messages.
#[derive(Debug)]
pub struct MessageFactory<'a> {
    campaign: &'a Campaign,
    settings: &'a BuildSettings,
    key: CampaignKey,
}

impl<'a> MessageFactory<'a> {
    pub fn new(campaign: &'a Campaign, settings: &'a BuildSettings) -> MessageFactory<'a> {
        MessageFactory {
            campaign,
            settings,
            key: campaign.key(),
        }
    }

    /// Renders the templates for `recipient` and builds its message, dated `date`.
    pub fn build(
        &self,
        recipient: &Recipient,
        date: SystemTime,
    ) -> Result<BuiltMessage, RenderError> {
        let rendered =
            self.campaign
                .template
                .render(recipient.index, &recipient.email, &recipient.vars)?;
        Ok(self.assemble(recipient.index, &recipient.email, &rendered, date))
    }

    /// Builds a message from parts already rendered.
    pub fn assemble(
        &self,
        index: u64,
        email: &str,
        rendered: &Rendered,
        date: SystemTime,
    ) -> BuiltMessage {
        let c = self.campaign;
        let message_id = format!(
            "{}@{}",
            uuid::Uuid::now_v7().simple(),
            self.settings.hostname
        );
        let secs = date
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut b = MessageBuilder::new()
            .date(Date::new(i64::try_from(secs).unwrap_or(i64::MAX)))
            .from(Address::new_address(
                c.from_name.as_deref(),
                c.from_email.as_str(),
            ));
        if let Some(reply_to) = &c.reply_to {
            b = b.reply_to(Address::new_address(None::<&str>, reply_to.as_str()));
        }
        b = b
            .to(Address::new_address(None::<&str>, email))
            .subject(Text::new(rendered.subject.as_str()))
            .message_id(MessageId::new(message_id.as_str()));
        if let Some(unsubscribe) = &self.settings.unsubscribe {
            let uris = unsubscribe.uris(self.key, index, email);
            b = b
                .header("List-Unsubscribe", URL::new_list(uris.into_iter()))
                .header(
                    "List-Unsubscribe-Post",
                    Raw::new("List-Unsubscribe=One-Click"),
                );
        }
        for (name, value) in &c.headers {
            // Validated: printable name, no line breaks in the value. Non-ASCII values are
            // RFC 2047 encoded by `Text`.
            b = b.header(name.as_str(), Text::new(value.as_str()));
        }
        if let Some(text) = &rendered.text {
            b = b.text_body(Cow::Borrowed(text.as_str()));
        }
        if let Some(html) = &rendered.html {
            b = b.html_body(Cow::Borrowed(html.as_str()));
        }
        for a in &c.attachments {
            b = b.attachment(a.content_type.as_str(), a.name.as_str(), a.data.as_slice());
        }
        let mut bytes = Vec::new();
        b.serialize(&mut bytes);
        let return_path = match &self.settings.verp {
            Some(verp) => verp.address(self.key, index),
            None => c.from_email.clone(),
        };
        BuiltMessage {
            return_path,
            message_id,
            bytes,
        }
    }
}
