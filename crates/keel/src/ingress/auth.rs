//! Checking SMTP AUTH credentials against the configured users (`[[smtp.user]]`).
//!
//! The session ([`keel_smtp::Session`]) decodes SASL and asks for a verdict with
//! [`keel_smtp::Next::Authenticate`]; [`Authenticator::check`] gives it:
//!
//! - a client over its failure limit ([`AuthFailures`]) is refused without checking anything,
//!   so a guessing client gets no answer about its guesses, only `421` and a closed connection;
//! - argon2 verification is deliberately slow (tens of milliseconds, ~19 MiB with the
//!   default parameters), so it runs on the blocking pool, never on a runtime worker, and at
//!   most [`MAX_CONCURRENT_VERIFICATIONS`] at once, bounding the memory a burst of AUTH
//!   commands can take;
//! - an unknown user is checked against a dummy hash, so the reply takes as long as for a
//!   known user with a wrong password and user names cannot be told apart by timing;
//! - passwords are never logged; failures are logged without the user name (people type
//!   passwords into the user name field).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use keel_config::SmtpConfig;
use keel_config::defaults::AUTH_FAILURE_WINDOW;
use keel_smtp::{AuthOutcome, Credentials};
use tokio::sync::Semaphore;

use super::limits::AuthFailures;

/// Argon2 verifications running at once; more wait their turn.
const MAX_CONCURRENT_VERIFICATIONS: usize = 4;

/// A configured user, as the verifier needs it.
struct User {
    password_hash: String,
    tenant: Option<String>,
}

/// The users and the per-client failure counts, shared by every session.
pub struct Authenticator {
    users: Arc<HashMap<String, User>>,
    failures: AuthFailures,
    verifications: Semaphore,
}

impl Authenticator {
    pub fn new(cfg: &SmtpConfig) -> Self {
        let users = cfg
            .users
            .iter()
            .map(|u| {
                let user = User {
                    password_hash: u.password_hash.clone(),
                    tenant: u.tenant.clone(),
                };
                (u.name.clone(), user)
            })
            .collect();
        Self {
            users: Arc::new(users),
            failures: AuthFailures::new(cfg.max_auth_failures, AUTH_FAILURE_WINDOW),
            verifications: Semaphore::new(MAX_CONCURRENT_VERIFICATIONS),
        }
    }

    /// The verdict on credentials a client at `ip` presented.
    pub async fn check(&self, ip: IpAddr, credentials: Credentials) -> AuthOutcome {
        if self.failures.is_blocked(ip, Instant::now()) {
            tracing::warn!(%ip, "SMTP AUTH refused: too many failures from this client");
            return AuthOutcome::TooManyFailures;
        }
        let Ok(_permit) = self.verifications.acquire().await else {
            return AuthOutcome::TemporaryFailure;
        };
        let users = self.users.clone();
        let Credentials {
            mechanism,
            username,
            password,
        } = credentials;
        let verdict = tokio::task::spawn_blocking(move || {
            let user = users.get(&username);
            let hash = match user {
                Some(u) => u.password_hash.as_str(),
                None => dummy_hash(),
            };
            let right = verify(password.expose(), hash) && user.is_some();
            let tenant = user.and_then(|u| u.tenant.clone());
            right.then_some((username, tenant))
        })
        .await;
        match verdict {
            Ok(Some((user, tenant))) => {
                tracing::info!(%ip, %user, %mechanism, "SMTP AUTH succeeded");
                AuthOutcome::Accepted { tenant }
            }
            Ok(None) => {
                let blocked = self.failures.record(ip, Instant::now());
                tracing::warn!(%ip, %mechanism, blocked, "SMTP AUTH failed");
                if blocked {
                    AuthOutcome::TooManyFailures
                } else {
                    AuthOutcome::Rejected
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "SMTP AUTH verification task failed");
                AuthOutcome::TemporaryFailure
            }
        }
    }
}

/// True if `password` matches the PHC string `hash`. The hash's own parameters are used, so
/// users hashed with older parameters keep working. An unparsable hash (configuration
/// validation rejects those) never matches.
pub fn verify(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash nobody's password matches, made once with the same parameters as `keel passwd`'s,
/// so checking an unknown user costs what checking a known one does. Blocking: call it on
/// the blocking pool.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        // The salt is random, so this matches no password anyone can know; if the system's
        // random source failed, a fixed salt still gives a hash of the same cost.
        let argon2 = Argon2::default();
        argon2
            .hash_password(b"keel: no such user")
            .or_else(|_| argon2.hash_password_with_salt(b"keel: no such user", b"keel-dummy-salt!"))
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use keel_config::SmtpUser;
    use keel_smtp::{Mechanism, Password};

    use super::*;

    fn credentials(user: &str, password: &str) -> Credentials {
        Credentials {
            mechanism: Mechanism::Plain,
            username: user.into(),
            password: Password::new(password),
        }
    }

    fn authenticator(max_failures: usize) -> Authenticator {
        let cfg = SmtpConfig {
            max_auth_failures: max_failures,
            users: vec![SmtpUser {
                name: "campaigns".into(),
                password_hash: crate::passwd::hash("right horse").expect("hash"),
                tenant: Some("acme".into()),
            }],
            ..SmtpConfig::default()
        };
        Authenticator::new(&cfg)
    }

    #[tokio::test]
    async fn right_wrong_unknown_and_blocked() {
        let auth = authenticator(3);
        let ip: IpAddr = "192.0.2.5".parse().unwrap();
        assert_eq!(
            auth.check(ip, credentials("campaigns", "right horse"))
                .await,
            AuthOutcome::Accepted {
                tenant: Some("acme".into())
            }
        );
        assert_eq!(
            auth.check(ip, credentials("campaigns", "wrong")).await,
            AuthOutcome::Rejected
        );
        // An unknown user takes about as long as a wrong password and gets the same answer.
        let started = std::time::Instant::now();
        assert_eq!(
            auth.check(ip, credentials("nobody", "right horse")).await,
            AuthOutcome::Rejected
        );
        assert!(started.elapsed() > Duration::from_millis(1));
        // The third failure blocks; after that even the right password is not checked.
        assert_eq!(
            auth.check(ip, credentials("campaigns", "again")).await,
            AuthOutcome::TooManyFailures
        );
        assert_eq!(
            auth.check(ip, credentials("campaigns", "right horse"))
                .await,
            AuthOutcome::TooManyFailures
        );
        // Other clients are unaffected.
        let other: IpAddr = "192.0.2.6".parse().unwrap();
        assert!(matches!(
            auth.check(other, credentials("campaigns", "right horse"))
                .await,
            AuthOutcome::Accepted { .. }
        ));
    }

    #[test]
    fn verify_rejects_garbage_hashes() {
        assert!(!verify("x", "not a hash"));
        assert!(!verify("x", ""));
    }
}
