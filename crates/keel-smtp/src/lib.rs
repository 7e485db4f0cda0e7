//! Keel's SMTP protocol core, without I/O.
//!
//! Everything here takes bytes and returns bytes or decisions: the server session state machine
//! ([`server::Session`]), mailbox address validation ([`address`]), reply formatting
//! ([`reply`]), the Received trace header ([`received`]) and SASL for SMTP AUTH ([`sasl`]). The daemon's tokio code only moves
//! bytes between sockets and these types, so the protocol is unit-tested (at every byte split)
//! and fuzzed without sockets. Command parsing is smtp-proto's; framing, limits and policy are
//! ours.
#![forbid(unsafe_code)]

pub mod address;
pub mod data;
pub mod received;
pub mod reply;
pub mod sasl;
pub mod server;

pub use address::{Address, AddressError, Domain};
pub use reply::{Enhanced, Reply};
pub use sasl::{Credentials, Mechanism, Password};
pub use server::{
    AuthOutcome, Authenticated, Next, Peer, ServerConfig, Session, Step, Transaction,
};
