//! Arbitrary text as a configuration file: the loader must never panic, and every error it
//! reports must point inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = keel_config::Config::parse(text, "fuzz.toml") {
        let lines = text.lines().count().max(1) + 1;
        for e in &errors.0 {
            assert!(e.line <= lines, "error line {} past the end ({lines})", e.line);
        }
    }
});
