//! `keel passwd`: hashes a password for `[[smtp.user]]`.
//!
//! Reads one line from standard input (so it works in scripts: `echo "$PW" | keel passwd`),
//! drops the line ending, and prints the argon2id PHC string to put in `password_hash`. The
//! parameters are argon2's defaults (argon2id v19, 19 MiB, 2 passes, 1 lane: the OWASP
//! recommendation) and the salt is random, so the same password hashes differently each time.
//! The password itself is never printed. On a terminal the input is echoed (reading it hidden
//! would need terminal control Keel does without); pipe it in to keep it off the screen.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;

use argon2::Argon2;
use argon2::password_hash::PasswordHasher as _;

/// Runs `keel passwd`.
pub fn main(json: bool) -> ExitCode {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    if let Err(e) = stdin.lock().read_line(&mut line) {
        eprintln!("keel passwd: cannot read the password from standard input: {e}");
        return ExitCode::FAILURE;
    }
    let password = strip_line_end(&line);
    if password.is_empty() {
        eprintln!("keel passwd: refusing an empty password");
        return ExitCode::FAILURE;
    }
    match hash(password) {
        Ok(phc) if json => {
            println!("{}", serde_json::json!({ "password_hash": phc }));
            ExitCode::SUCCESS
        }
        Ok(phc) => {
            println!("{phc}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keel passwd: cannot hash the password: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The argon2id PHC string for `password`, with a fresh random salt.
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
}

/// The line without its `\n` or `\r\n`; other trailing whitespace is part of the password.
fn strip_line_end(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash("correct horse").expect("hash");
        let b = hash("correct horse").expect("hash");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "the salt is random");
        assert!(crate::ingress::auth::verify("correct horse", &a));
        assert!(!crate::ingress::auth::verify("correct horse ", &a));
        assert!(keel_config::check_password_hash(&a).is_ok());
    }

    #[test]
    fn only_the_line_end_is_stripped() {
        assert_eq!(strip_line_end("pw\n"), "pw");
        assert_eq!(strip_line_end("pw\r\n"), "pw");
        assert_eq!(strip_line_end(" pw \n"), " pw ");
        assert_eq!(strip_line_end("pw"), "pw");
        assert_eq!(strip_line_end("\n"), "");
    }
}
