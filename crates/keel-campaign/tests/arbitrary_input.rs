//! The CI form of the `campaign_request` fuzz target: arbitrary request bodies and streamed
//! recipient lists, fed in arbitrary chunks, never panic.

use keel_campaign::{CampaignRequest, Format, ReaderLimits, RecipientReader, RequestLimits};
use proptest::prelude::*;

fn drain(format: Format, data: &[u8], chunk: usize) {
    let mut reader = RecipientReader::new(format, ReaderLimits::default());
    for piece in data.chunks(chunk.max(1)) {
        reader.push(piece);
        while let Ok(Some(_)) = reader.next_item() {}
    }
    reader.end();
    for _ in 0..data.len() + 1 {
        match reader.next_item() {
            Ok(Some(_)) => {}
            _ => break,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_request_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(req) = CampaignRequest::from_json(&body) {
            let _ = req.validate(&RequestLimits::default());
        }
    }

    #[test]
    fn json_shaped_requests_never_panic(
        subject in "\\PC{0,40}",
        email in "[a-z@.\"\\\\ ]{0,20}",
        header in "[A-Za-z\\-:\r\n]{0,16}",
        value in "\\PC{0,20}",
    ) {
        let body = serde_json::json!({
            "campaign": "c", "from": {"email": email}, "subject": subject, "text": "{{ x }}",
            "headers": {header: value}, "recipients": [{"email": email, "vars": {"x": 1}}]
        });
        if let Ok(req) = CampaignRequest::from_json(body.to_string().as_bytes()) {
            let _ = req.validate(&RequestLimits::default());
        }
    }

    #[test]
    fn arbitrary_recipient_streams_never_panic(data in "[\\[\\]{}\",:a-z@.\\n ]{0,300}", chunk in 1usize..40) {
        drain(Format::JsonArray, data.as_bytes(), chunk);
        drain(Format::Ndjson, data.as_bytes(), chunk);
    }
}
