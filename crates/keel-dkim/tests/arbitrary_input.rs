//! `Signers::sign` on hostile input: never a panic, and never a signature over a message whose
//! From field is ambiguous.

mod common;

use common::*;
use keel_dkim::{DkimError, MessageProblem};
use proptest::prelude::*;

#[test]
fn from_field_spelled_with_space_before_colon_counts_as_from() {
    let f = fixture(&[("acme.example", "s1", ed_key())]);
    let r = f
        .signers
        .sign(b"From: a@acme.example\r\nFrom : b@evil.example\r\nSubject: x\r\n\r\nbody\r\n");
    assert!(
        matches!(r, Err(DkimError::Message(MessageProblem::SeveralFrom(2)))),
        "{r:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let f = fixture(&[("acme.example", "s1", ed_key())]);
        let _ = f.signers.sign(&bytes);
        let mut with_from = b"From: a@acme.example\r\n".to_vec();
        with_from.extend_from_slice(&bytes);
        let _ = f.signers.sign(&with_from);
    }

    #[test]
    fn header_soup_never_panics(
        lines in proptest::collection::vec(
            "(From|from|To|Subject|List-Unsubscribe|X-[a-z]{1,5})[ \t]{0,2}:[ -~\t\u{80}-\u{10ffff}]{0,40}(\r\n|\n|\r\n[ \t])",
            0..12,
        ),
        body in "[ -~\r\n\t]{0,200}",
    ) {
        let f = fixture(&[("acme.example", "s1", ed_key())]);
        let message = format!("{}\r\n{body}", lines.concat());
        match f.signers.sign(message.as_bytes()) {
            Ok(Some(header)) => prop_assert!(header.starts_with("DKIM-Signature: ")),
            Ok(None) | Err(DkimError::Message(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }
}
