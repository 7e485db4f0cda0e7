//! Signed per-recipient tokens: what lets a bounce or an unsubscribe request that arrives days
//! later be mapped back to a campaign and a recipient, without anyone being able to forge one.
//!
//! A token is a small payload and a truncated HMAC-SHA256 over it (ring), keyed with the
//! `[tracking]` secret and a *purpose* label, so a VERP token cannot be replayed as an
//! unsubscribe token. Two encodings:
//! - **compact** ([`encode_compact`]): version, campaign key, recipient number, 80-bit tag —
//!   27 bytes, 44 characters of lowercase base32. It fits in an address local part (at most 64
//!   octets, RFC 5321) and survives MTAs that lowercase local parts, so it is what VERP return
//!   paths and `mailto:` unsubscribe addresses carry;
//! - **URL** (in [`crate::unsubscribe`]): base64url, room for the address itself.
//!
//! 80 bits of tag: an online forger needs about 2⁷⁹ guesses per success; every guess costs a
//! message or an HTTP request. Tags are compared in constant time.

use ring::digest;
use ring::hmac;

/// The version byte of every token, so the format can change without old tokens
/// misdecoding.
pub(crate) const VERSION: u8 = 1;
/// Bytes of the HMAC kept in a compact token.
const COMPACT_TAG: usize = 10;
/// Bytes of a compact token before encoding.
const COMPACT_LEN: usize = 1 + 8 + 8 + COMPACT_TAG;

/// What a token is for; part of the MAC input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The VERP return path (`bounces+TOKEN@bounce-domain`).
    Verp,
    /// `mailto:` one-click unsubscribe (`unsubscribe+TOKEN@bounce-domain`).
    UnsubscribeMailto,
    /// The HTTPS one-click unsubscribe URL.
    UnsubscribeUrl,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Verp => b"keel-verp\0",
            Purpose::UnsubscribeMailto => b"keel-unsub-mailto\0",
            Purpose::UnsubscribeUrl => b"keel-unsub-url\0",
        }
    }
}

/// The campaign a token belongs to, as 64 bits: the first 8 bytes of SHA-256 over the tenant
/// and campaign id. The id itself does not fit in a local part; whoever decodes a token looks
/// the key up in its campaign store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CampaignKey(pub u64);

impl CampaignKey {
    pub fn derive(tenant: Option<&str>, campaign: &str) -> CampaignKey {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"keel-campaign-key\0");
        ctx.update(tenant.unwrap_or("").as_bytes());
        ctx.update(b"\0");
        ctx.update(campaign.as_bytes());
        let d = ctx.finish();
        let mut first = [0u8; 8];
        first.copy_from_slice(&d.as_ref()[..8]);
        CampaignKey(u64::from_be_bytes(first))
    }
}

/// Why a token was refused. Deliberately coarse: a forger learns nothing from the kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a Keel token")]
    Malformed,
    #[error("the token's signature does not verify")]
    BadSignature,
}

/// The secret tokens are signed with (`[tracking] secret`).
#[derive(Clone)]
pub struct TokenKey(hmac::Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<secret>)")
    }
}

/// Shortest secret accepted: 16 bytes (128 bits) of whatever the operator generated.
pub const MIN_SECRET_BYTES: usize = 16;

impl TokenKey {
    /// `secret` must be at least [`MIN_SECRET_BYTES`] long (e.g. `openssl rand -hex 32`).
    pub fn new(secret: &[u8]) -> Result<TokenKey, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the tracking secret must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
            ));
        }
        Ok(TokenKey(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    pub(crate) fn tag(&self, purpose: Purpose, payload: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(purpose.label());
        ctx.update(payload);
        ctx.sign()
    }

    /// Constant-time check of a (possibly truncated) tag.
    pub(crate) fn verify(&self, purpose: Purpose, payload: &[u8], tag: &[u8]) -> bool {
        let expected = self.tag(purpose, payload);
        let expected = expected.as_ref();
        if tag.is_empty() || tag.len() > expected.len() {
            return false;
        }
        let diff = expected
            .iter()
            .zip(tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

/// Encodes (campaign, recipient) as a compact token for `purpose`: 44 lowercase base32
/// characters.
pub fn encode_compact(
    key: &TokenKey,
    purpose: Purpose,
    campaign: CampaignKey,
    recipient: u64,
) -> String {
    let mut bytes = [0u8; COMPACT_LEN];
    bytes[0] = VERSION;
    bytes[1..9].copy_from_slice(&campaign.0.to_be_bytes());
    bytes[9..17].copy_from_slice(&recipient.to_be_bytes());
    let tag = key.tag(purpose, &bytes[..17]);
    bytes[17..].copy_from_slice(&tag.as_ref()[..COMPACT_TAG]);
    base32_encode(&bytes)
}

/// Decodes a compact token (any letter case) and checks its signature.
pub fn decode_compact(
    key: &TokenKey,
    purpose: Purpose,
    token: &str,
) -> Result<(CampaignKey, u64), TokenError> {
    let bytes = base32_decode(token).ok_or(TokenError::Malformed)?;
    if bytes.len() != COMPACT_LEN || bytes[0] != VERSION {
        return Err(TokenError::Malformed);
    }
    if !key.verify(purpose, &bytes[..17], &bytes[17..]) {
        return Err(TokenError::BadSignature);
    }
    let mut campaign = [0u8; 8];
    campaign.copy_from_slice(&bytes[1..9]);
    let mut recipient = [0u8; 8];
    recipient.copy_from_slice(&bytes[9..17]);
    Ok((
        CampaignKey(u64::from_be_bytes(campaign)),
        u64::from_be_bytes(recipient),
    ))
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// RFC 4648 base32, lowercase, no padding.
fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Inverse of [`base32_encode`], case-insensitive; `None` on any other character or on
/// non-zero padding bits (so each byte string has exactly one spelling, up to case).
fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c.to_ascii_lowercase() {
            c @ b'a'..=b'z' => c - b'a',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = ((acc << 5) | u32::from(v)) & 0xffff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits >= 5 || (acc & ((1 << bits) - 1)) != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> TokenKey {
        TokenKey::new(secret.as_bytes()).unwrap()
    }

    #[test]
    fn base32_round_trips_every_length() {
        for n in 0..40 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let text = base32_encode(&bytes);
            assert_eq!(base32_decode(&text).unwrap(), bytes);
            assert_eq!(base32_decode(&text.to_uppercase()).unwrap(), bytes);
        }
        assert!(base32_decode("ab1").is_none());
        assert!(base32_decode("b").is_none()); // a lone 5-bit group is never valid
    }

    #[test]
    fn compact_tokens_round_trip_and_fit_a_local_part() {
        let k = key("0123456789abcdef0123456789abcdef");
        let c = CampaignKey::derive(Some("acme"), "black-friday-2026");
        let t = encode_compact(&k, Purpose::Verp, c, 123_456);
        assert_eq!(t.len(), 44);
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_eq!(decode_compact(&k, Purpose::Verp, &t).unwrap(), (c, 123_456));
        assert_eq!(
            decode_compact(&k, Purpose::Verp, &t.to_uppercase()).unwrap(),
            (c, 123_456)
        );
    }

    #[test]
    fn forgeries_fail() {
        let k = key("0123456789abcdef0123456789abcdef");
        let c = CampaignKey::derive(None, "c1");
        let t = encode_compact(&k, Purpose::Verp, c, 5);
        // Another purpose, another key.
        assert_eq!(
            decode_compact(&k, Purpose::UnsubscribeMailto, &t),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            decode_compact(&key("another secret, 16+ bytes"), Purpose::Verp, &t),
            Err(TokenError::BadSignature)
        );
        // Every single-character change of the token is caught.
        for i in 0..t.len() {
            let mut bytes = t.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let forged = String::from_utf8(bytes).unwrap();
            assert!(
                decode_compact(&k, Purpose::Verp, &forged).is_err(),
                "{forged}"
            );
        }
        // A different recipient with the old tag.
        let other = encode_compact(&k, Purpose::Verp, c, 6);
        let spliced = format!("{}{}", &other[..28], &t[28..]);
        assert!(decode_compact(&k, Purpose::Verp, &spliced).is_err());
        assert_eq!(
            decode_compact(&k, Purpose::Verp, "short"),
            Err(TokenError::Malformed)
        );
        assert!(TokenKey::new(b"too short").is_err());
    }

    #[test]
    fn campaign_keys_depend_on_tenant_and_id() {
        let a = CampaignKey::derive(Some("acme"), "c1");
        assert_eq!(a, CampaignKey::derive(Some("acme"), "c1"));
        assert_ne!(a, CampaignKey::derive(Some("other"), "c1"));
        assert_ne!(a, CampaignKey::derive(Some("acme"), "c2"));
        assert_ne!(
            CampaignKey::derive(Some("ab"), "c"),
            CampaignKey::derive(Some("a"), "bc")
        );
    }
}
