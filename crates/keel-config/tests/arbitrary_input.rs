//! The CI form of the `config` fuzz target (fuzz/fuzz_targets/config.rs): arbitrary text and
//! TOML-shaped mutations of a real file never panic the loader, and errors point inside it.

use proptest::prelude::*;

const BASE: &str = "[smtp]\nlisten = \"127.0.0.1:2525\"\nmax_message_size = \"25MB\"\n\n\
                    [delivery]\nmax_connections_per_destination = 8\n\n[[route]]\ndomain = \"*\"\n\
                    smarthost = \"127.0.0.1:2526\"\n\n[retry]\nintervals = [\"5m\", \"1h\"]\n\n\
                    [shaping.default]\nmax_message_rate = \"100/s\"\n";

fn check(text: &str) {
    if let Err(errors) = keel_config::Config::parse(text, "p.toml") {
        let lines = text.lines().count().max(1) + 1;
        for e in &errors.0 {
            assert!(
                e.line <= lines,
                "line {} past the end ({lines}): {e}",
                e.line
            );
            assert!(!e.message.is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        check(&text);
    }

    #[test]
    fn mutated_real_file_never_panics(pos in 0usize..BASE.len(), insert in "[\\[\\]=\"#.,a-z0-9 \n]{0,12}", cut in 0usize..8) {
        let mut text = BASE.to_string();
        let at = (0..=pos).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        let end = (at + cut).min(text.len());
        let end = (end..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
        text.replace_range(at..end, &insert);
        check(&text);
    }
}
