//! VERP return paths: `bounces+<token>@<bounce-domain>`, one per recipient.
//!
//! A bounce that arrives hours after delivery (an "asynchronous" bounce: the receiver accepted
//! the message, then failed to deliver it) is addressed to the message's return path. With one
//! return path per recipient, the address alone says which campaign and which recipient
//! bounced, whatever the bounce's body looks like. The token is signed
//! ([`crate::token`]), so nobody can make Keel record a bounce for a recipient by mailing a
//! made-up address.

use crate::token::{CampaignKey, Purpose, TokenError, TokenKey, decode_compact, encode_compact};

/// The local-part prefix of VERP addresses.
pub const VERP_PREFIX: &str = "bounces+";

/// Makes and reads VERP addresses for one bounce domain.
#[derive(Debug, Clone)]
pub struct Verp {
    key: TokenKey,
    domain: String,
}

/// Why an address is not a VERP address of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerpError {
    #[error("not a VERP address of {0}")]
    NotVerp(String),
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl Verp {
    /// `domain` is the bounce domain (its MX must point at Keel); stored lowercase.
    pub fn new(key: TokenKey, domain: &str) -> Verp {
        Verp {
            key,
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The return path for recipient number `recipient` of `campaign` (53 + domain octets).
    pub fn address(&self, campaign: CampaignKey, recipient: u64) -> String {
        format!(
            "{VERP_PREFIX}{}@{}",
            encode_compact(&self.key, Purpose::Verp, campaign, recipient),
            self.domain
        )
    }

    /// Maps a VERP address (as found in a bounce's envelope recipient) back to (campaign,
    /// recipient). Case-insensitive, as receiving MTAs may change case; refuses other domains,
    /// other local parts and tokens whose signature does not verify.
    pub fn decode(&self, address: &str) -> Result<(CampaignKey, u64), VerpError> {
        let not_verp = || VerpError::NotVerp(self.domain.clone());
        let (local, domain) = address.rsplit_once('@').ok_or_else(not_verp)?;
        if !domain
            .trim_end_matches('.')
            .eq_ignore_ascii_case(&self.domain)
        {
            return Err(not_verp());
        }
        let prefix = local.get(..VERP_PREFIX.len()).ok_or_else(not_verp)?;
        if !prefix.eq_ignore_ascii_case(VERP_PREFIX) {
            return Err(not_verp());
        }
        Ok(decode_compact(
            &self.key,
            Purpose::Verp,
            &local[VERP_PREFIX.len()..],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verp() -> Verp {
        Verp::new(
            TokenKey::new(b"a secret of at least sixteen bytes").unwrap(),
            "Bounces.ACME.example.",
        )
    }

    #[test]
    fn round_trip_and_smtp_valid() {
        let v = verp();
        let c = CampaignKey::derive(Some("acme"), "bf");
        let a = v.address(c, 99);
        assert!(a.starts_with("bounces+"));
        assert!(a.ends_with("@bounces.acme.example"));
        let parsed = keel_smtp::Address::parse(&a).expect("a valid RCPT address");
        assert!(parsed.local.len() <= 64);
        assert_eq!(v.decode(&a).unwrap(), (c, 99));
        assert_eq!(v.decode(&a.to_uppercase()).unwrap(), (c, 99));
    }

    #[test]
    fn forged_and_foreign_addresses_fail() {
        let v = verp();
        let c = CampaignKey::derive(None, "bf");
        let a = v.address(c, 1);
        let other_key = Verp::new(
            TokenKey::new(b"another secret, sixteen+ bytes").unwrap(),
            "bounces.acme.example",
        );
        assert!(matches!(
            other_key.decode(&a),
            Err(VerpError::Token(TokenError::BadSignature))
        ));
        assert!(matches!(
            v.decode(&a.replace("@bounces.", "@other.")),
            Err(VerpError::NotVerp(_))
        ));
        assert!(matches!(
            v.decode(&a.replace("bounces+", "bouncez+")),
            Err(VerpError::NotVerp(_))
        ));
        assert!(v.decode("postmaster@bounces.acme.example").is_err());
        assert!(v.decode("bounces+@bounces.acme.example").is_err());
        assert!(v.decode("no-at-sign").is_err());
        assert!(v.decode("b@bounces.acme.example").is_err());
    }
}
