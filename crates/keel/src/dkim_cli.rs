//! `keel dkim keygen`: makes a DKIM signing key and says how to publish and configure it.
//!
//! The private key is written with mode 0600 and never over an existing file (a key in use
//! replaced by accident would break every signature until DNS caught up). Standard output
//! carries what the operator copies: the zone-file TXT record (split into 255-octet strings),
//! the unsplit record value for DNS providers' web forms, and the `[[dkim]]` entry to add to
//! keel.toml. Key generation itself is keel-dkim's (ring for Ed25519; RSA keys from the `rsa`
//! crate, generation only).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use keel_dkim::{Algorithm, GeneratedKey};

/// `keel dkim ...`
#[derive(Subcommand)]
pub enum DkimCommand {
    /// Generate a signing key (PKCS#8 PEM, mode 0600) and print the DNS TXT record to publish.
    Keygen {
        /// The domain to sign for (the From domain, or a parent of it).
        #[arg(long)]
        domain: String,
        /// The selector: the key is published at <selector>._domainkey.<domain>.
        #[arg(long)]
        selector: String,
        /// rsa (2048 bits, verified everywhere) or ed25519 (RFC 8463; pair it with an RSA key).
        #[arg(long, default_value = "rsa")]
        algorithm: String,
        /// Where to write the private key; default: <domain>.<selector>.pem in the current
        /// directory. An existing file is never overwritten.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print `{"key_file", "dns_name", "dns_txt", "zone_record"}` instead of instructions.
        #[arg(long)]
        json: bool,
    },
}

pub fn main(command: DkimCommand) -> ExitCode {
    match command {
        DkimCommand::Keygen {
            domain,
            selector,
            algorithm,
            out,
            json,
        } => match keygen(&domain, &selector, &algorithm, out, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("keel dkim keygen: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn keygen(
    domain: &str,
    selector: &str,
    algorithm: &str,
    out: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let algorithm: Algorithm = algorithm.parse()?;
    let key = keel_dkim::keygen(algorithm, domain, selector)?;
    // Names as the signer will use them (lowercase A-labels), for the default file name and
    // the config snippet.
    let domain = keel_dkim::normalize_domain(domain).map_err(anyhow::Error::msg)?;
    let selector = keel_dkim::normalize_selector(selector).map_err(anyhow::Error::msg)?;
    let path = out.unwrap_or_else(|| PathBuf::from(format!("{domain}.{selector}.pem")));
    write_private(&path, key.pem.as_bytes())?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "key_file": path.display().to_string(),
                "domain": domain,
                "selector": selector,
                "dns_name": key.dns_name,
                "dns_txt": key.dns_txt,
                "zone_record": key.zone_record(),
            })
        );
    } else {
        print!("{}", instructions(&key, &domain, &selector, &path));
    }
    Ok(())
}

/// Creates `path` with mode 0600 (before any byte is written) and writes the key.
fn write_private(path: &Path, pem: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (an existing key is never overwritten)",
                path.display()
            )
        })?;
    file.write_all(pem)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn instructions(key: &GeneratedKey, domain: &str, selector: &str, path: &Path) -> String {
    format!(
        "# Private key written to {path} (mode 0600).\n\
         # Publish this DNS TXT record (zone-file form):\n\
         {zone}\n\
         # The same record value in one piece, for DNS web forms:\n\
         {txt}\n\
         # Then add to keel.toml (a relative key path is relative to keel.toml's directory):\n\
         [[dkim]]\n\
         domain = \"{domain}\"\n\
         selector = \"{selector}\"\n\
         key = \"{path}\"\n",
        path = path.display(),
        zone = key.zone_record(),
        txt = key.dns_txt,
    )
}
