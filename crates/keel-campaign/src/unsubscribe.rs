//! One-click unsubscribe (RFC 2369 `List-Unsubscribe`, RFC 8058 `List-Unsubscribe-Post`).
//!
//! Large mailbox providers require both for bulk mail: an HTTPS URL the provider POSTs
//! `List-Unsubscribe=One-Click` to when the user clicks "unsubscribe", and optionally a
//! `mailto:` address. Both carry a per-recipient signed token, so the endpoint (which comes with
//! the bounces and tracking work) can act on the click without a lookup and without trusting
//! the request: the URL token holds the campaign key, the recipient number and the address
//! itself (base64url, signed), the mailto token the compact form (the address would not fit in
//! a local part).
//!
//! The URL is `<base_url>/u/<token>`; `base_url` comes from `[tracking] base_url` and must be
//! HTTPS in production (RFC 8058 §3.1 requires an HTTPS URI for one-click); plain HTTP is
//! accepted for tests.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::token::{CampaignKey, Purpose, TokenError, TokenKey, VERSION, encode_compact};

/// Bytes of the HMAC kept in a URL token (128 bits: a URL has room).
const URL_TAG: usize = 16;

/// The local-part prefix of mailto unsubscribe addresses.
pub const MAILTO_PREFIX: &str = "unsubscribe+";

/// What an unsubscribe token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeTarget {
    pub campaign: CampaignKey,
    pub recipient: u64,
    pub email: String,
}

/// Builds the unsubscribe URIs for a campaign's recipients.
#[derive(Debug, Clone)]
pub struct Unsubscribe {
    key: TokenKey,
    base_url: String,
    mailto_domain: Option<String>,
}

impl Unsubscribe {
    /// `base_url`: `https://host[/path]` (trailing `/` ignored); `mailto_domain`: a domain
    /// whose mail reaches Keel (the bounce domain), to add a `mailto:` URI.
    pub fn new(
        key: TokenKey,
        base_url: &str,
        mailto_domain: Option<&str>,
    ) -> Result<Unsubscribe, String> {
        let base_url = base_url.trim_end_matches('/');
        let rest = base_url
            .strip_prefix("https://")
            .or_else(|| base_url.strip_prefix("http://"))
            .ok_or_else(|| format!("{base_url:?} is not an http(s) URL"))?;
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty()
            || !base_url
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"<>\"'\\^`{|}".contains(&b))
        {
            return Err(format!(
                "{base_url:?} is not a usable base URL (a host is required; no spaces, quotes or angle brackets)"
            ));
        }
        Ok(Unsubscribe {
            key,
            base_url: base_url.to_string(),
            mailto_domain: mailto_domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
        })
    }

    /// The one-click URL for one recipient.
    pub fn url(&self, campaign: CampaignKey, recipient: u64, email: &str) -> String {
        let mut payload = Vec::with_capacity(17 + email.len() + URL_TAG);
        payload.push(VERSION);
        payload.extend_from_slice(&campaign.0.to_be_bytes());
        payload.extend_from_slice(&recipient.to_be_bytes());
        payload.extend_from_slice(email.as_bytes());
        let tag = self.key.tag(Purpose::UnsubscribeUrl, &payload);
        payload.extend_from_slice(&tag.as_ref()[..URL_TAG]);
        format!("{}/u/{}", self.base_url, URL_SAFE_NO_PAD.encode(payload))
    }

    /// The `mailto:` URI, when a mailto domain is configured.
    pub fn mailto(&self, campaign: CampaignKey, recipient: u64) -> Option<String> {
        let domain = self.mailto_domain.as_deref()?;
        let token = encode_compact(&self.key, Purpose::UnsubscribeMailto, campaign, recipient);
        Some(format!(
            "mailto:{MAILTO_PREFIX}{token}@{domain}?subject=unsubscribe"
        ))
    }

    /// The `List-Unsubscribe` URIs (mailto first, then HTTPS), without angle brackets.
    pub fn uris(&self, campaign: CampaignKey, recipient: u64, email: &str) -> Vec<String> {
        let mut uris = Vec::with_capacity(2);
        uris.extend(self.mailto(campaign, recipient));
        uris.push(self.url(campaign, recipient, email));
        uris
    }

    /// Reads the token of a one-click URL (the last path segment) back.
    pub fn decode_url_token(&self, token: &str) -> Result<UnsubscribeTarget, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Malformed)?;
        if bytes.len() < 17 + URL_TAG || bytes[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) = bytes.split_at(bytes.len() - URL_TAG);
        if !self.key.verify(Purpose::UnsubscribeUrl, payload, tag) {
            return Err(TokenError::BadSignature);
        }
        let mut campaign = [0u8; 8];
        campaign.copy_from_slice(&payload[1..9]);
        let mut recipient = [0u8; 8];
        recipient.copy_from_slice(&payload[9..17]);
        let email = String::from_utf8(payload[17..].to_vec()).map_err(|_| TokenError::Malformed)?;
        Ok(UnsubscribeTarget {
            campaign: CampaignKey(u64::from_be_bytes(campaign)),
            recipient: u64::from_be_bytes(recipient),
            email,
        })
    }

    /// Reads a mailto unsubscribe address (`unsubscribe+TOKEN@domain`) back.
    pub fn decode_mailto(&self, address: &str) -> Result<(CampaignKey, u64), TokenError> {
        let (local, _) = address.rsplit_once('@').ok_or(TokenError::Malformed)?;
        let prefix = local
            .get(..MAILTO_PREFIX.len())
            .ok_or(TokenError::Malformed)?;
        if !prefix.eq_ignore_ascii_case(MAILTO_PREFIX) {
            return Err(TokenError::Malformed);
        }
        crate::token::decode_compact(
            &self.key,
            Purpose::UnsubscribeMailto,
            &local[MAILTO_PREFIX.len()..],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsub() -> Unsubscribe {
        Unsubscribe::new(
            TokenKey::new(b"a secret of at least sixteen bytes").unwrap(),
            "https://t.acme.example/",
            Some("bounces.acme.example"),
        )
        .unwrap()
    }

    #[test]
    fn url_and_mailto_round_trip() {
        let u = unsub();
        let c = CampaignKey::derive(Some("acme"), "bf");
        let url = u.url(c, 42, "ann@x.example");
        let token = url
            .strip_prefix("https://t.acme.example/u/")
            .expect("base URL");
        assert_eq!(
            u.decode_url_token(token).unwrap(),
            UnsubscribeTarget {
                campaign: c,
                recipient: 42,
                email: "ann@x.example".into()
            }
        );
        let mailto = u.mailto(c, 42).unwrap();
        let address = mailto
            .strip_prefix("mailto:")
            .and_then(|m| m.strip_suffix("?subject=unsubscribe"))
            .unwrap();
        assert!(keel_smtp::Address::parse(address).is_ok());
        assert_eq!(u.decode_mailto(address).unwrap(), (c, 42));
        assert_eq!(u.uris(c, 42, "ann@x.example"), [mailto, url]);
    }

    #[test]
    fn forged_tokens_fail() {
        let u = unsub();
        let c = CampaignKey::derive(None, "bf");
        let url = u.url(c, 1, "ann@x.example");
        let token = url.rsplit('/').next().unwrap();
        // Change the address inside the token: the signature no longer matches.
        let mut bytes = URL_SAFE_NO_PAD.decode(token).unwrap();
        bytes[17] = b'b';
        let forged = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(u.decode_url_token(&forged), Err(TokenError::BadSignature));
        assert_eq!(u.decode_url_token("!!"), Err(TokenError::Malformed));
        // A VERP token is not an unsubscribe token.
        let verp = crate::Verp::new(
            TokenKey::new(b"a secret of at least sixteen bytes").unwrap(),
            "bounces.acme.example",
        )
        .address(c, 1);
        let as_mailto = verp.replace("bounces+", "unsubscribe+");
        assert_eq!(u.decode_mailto(&as_mailto), Err(TokenError::BadSignature));
    }

    #[test]
    fn base_urls_are_checked() {
        let k = TokenKey::new(b"a secret of at least sixteen bytes").unwrap();
        assert!(Unsubscribe::new(k.clone(), "ftp://x.example", None).is_err());
        assert!(Unsubscribe::new(k.clone(), "https://", None).is_err());
        assert!(Unsubscribe::new(k.clone(), "https://x.example/a b", None).is_err());
        assert!(Unsubscribe::new(k.clone(), "https://x.example/<a>", None).is_err());
        let u = Unsubscribe::new(k, "http://127.0.0.1:8025/track", None).unwrap();
        assert!(
            u.url(CampaignKey(1), 2, "a@b.example")
                .starts_with("http://127.0.0.1:8025/track/u/")
        );
        assert_eq!(u.mailto(CampaignKey(1), 2), None);
    }
}
