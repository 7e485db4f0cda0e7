//! Ways mail enters Keel. Today: SMTP ([`smtp`]).

pub mod smtp;
