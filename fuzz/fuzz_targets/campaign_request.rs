//! Arbitrary bytes as an injection request, and as a streamed recipient list in both formats,
//! in arbitrary chunks: nothing panics, and the reader's buffer stays bounded.
#![no_main]

use keel_campaign::{CampaignRequest, Format, ReaderLimits, RecipientReader, RequestLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = CampaignRequest::from_json(data) {
        let _ = req.validate(&RequestLimits::default());
    }
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    for format in [Format::JsonArray, Format::Ndjson] {
        let mut reader = RecipientReader::new(format, ReaderLimits::default());
        for chunk in rest.chunks(usize::from(cut) % 32 + 1) {
            reader.push(chunk);
            while let Ok(Some(_)) = reader.next_item() {}
        }
        reader.end();
        for _ in 0..rest.len() + 1 {
            match reader.next_item() {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
});
