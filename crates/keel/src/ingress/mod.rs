//! Ways mail enters Keel. Today: SMTP ([`smtp`]).

pub mod auth;
pub mod backpressure;
pub mod headers;
pub mod limits;
pub mod smtp;
pub mod submit;
pub mod tls;
