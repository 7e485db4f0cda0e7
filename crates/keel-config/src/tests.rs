//! Whole-file tests: parsing the example, the defaults, and the position,
//! key and wording of each kind of error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::{Config, ConfigError, HostPort, Route, RouteDomain, StartTls};

const MIN: u64 = 60;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

fn net(text: &str) -> IpNet {
    text.parse().expect("test network")
}

/// Parses text that must be rejected and returns its errors.
fn errors(text: &str) -> Vec<ConfigError> {
    match Config::parse(text, "keel.toml") {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(errors) => errors.0,
    }
}

/// The one error in `text`, as (line, column, key, message).
fn only_error(text: &str) -> (usize, usize, String, String) {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "expected one error, got: {errors:#?}");
    let e = &errors[0];
    (e.line, e.column, e.key.clone(), e.message.clone())
}

fn parse_ok(text: &str) -> Config {
    Config::parse(text, "keel.toml").unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
}

const EXAMPLE: &str = r#"[smtp]
listen = "127.0.0.1:2525"          # one address string or a list of them
hostname = "mta.example.com"       # EHLO/greeting name
max_message_size = "25MB"          # KB = 1024, MB = 1024 * 1024
max_recipients = 1000              # per transaction
relay_networks = ["127.0.0.0/8"]   # CIDRs or bare IPs (v4 or v6)
max_connections = 1000             # concurrent inbound sessions
timeouts = { command = "5m", data_block = "3m", data_done = "10m", greeting = "5m" }

[http]
listen = "127.0.0.1:8025"

[spool]
dir = "keel-data/spool"

[log]
dir = "keel-data/log"              # JSON-lines event logs

[dns]
nameservers = ["127.0.0.1:5353"]   # "ip" (port 53) or "ip:port"

[delivery]
port = 25                          # TCP port for MX hosts
max_connections_per_destination = 32
max_messages_per_connection = 100
connect_timeout = "30s"
timeouts = { greeting = "5m", ehlo = "5m", mail = "5m", rcpt = "5m", data = "2m", data_block = "3m", data_done = "10m" }
idle_timeout = "10s"               # keep an idle outbound connection this long for reuse
starttls = "opportunistic"         # "opportunistic" | "disabled"

[[route]]                          # zero or more; bypasses MX lookup
domain = "example.com"
smarthost = "127.0.0.1:2526"

[retry]
intervals = ["5m", "10m", "20m", "40m", "1h"]   # last one repeats
max_age = "3d"
"#;

#[test]
fn full_example_parses_to_expected_values() {
    let c = parse_ok(EXAMPLE);
    assert_eq!(c.smtp.listen, vec![addr("127.0.0.1:2525")]);
    assert_eq!(c.smtp.hostname, "mta.example.com");
    assert_eq!(c.smtp.max_message_size, 25 * 1024 * 1024);
    assert_eq!(c.smtp.max_recipients, 1000);
    assert_eq!(c.smtp.relay_networks, vec![net("127.0.0.0/8")]);
    assert_eq!(c.smtp.max_connections, 1000);
    assert_eq!(c.smtp.timeouts.command, secs(5 * MIN));
    assert_eq!(c.smtp.timeouts.data_block, secs(3 * MIN));
    assert_eq!(c.smtp.timeouts.data_done, secs(10 * MIN));
    assert_eq!(c.smtp.timeouts.greeting, secs(5 * MIN));
    assert_eq!(c.http.listen, addr("127.0.0.1:8025"));
    assert_eq!(c.spool.dir, PathBuf::from("keel-data/spool"));
    assert_eq!(c.log.dir, PathBuf::from("keel-data/log"));
    assert_eq!(c.dns.nameservers, vec![addr("127.0.0.1:5353")]);
    assert_eq!(c.delivery.port, 25);
    assert_eq!(c.delivery.max_connections_per_destination, 32);
    assert_eq!(c.delivery.max_messages_per_connection, 100);
    assert_eq!(c.delivery.connect_timeout, secs(30));
    let t = c.delivery.timeouts;
    assert_eq!(
        [
            t.greeting,
            t.ehlo,
            t.mail,
            t.rcpt,
            t.data,
            t.data_block,
            t.data_done
        ],
        [5, 5, 5, 5, 2, 3, 10].map(|m| secs(m * MIN))
    );
    assert_eq!(c.delivery.idle_timeout, secs(10));
    assert_eq!(c.delivery.starttls, StartTls::Opportunistic);
    assert_eq!(
        c.routes,
        vec![Route {
            domain: RouteDomain::Exact("example.com".into()),
            smarthost: HostPort {
                host: "127.0.0.1".into(),
                port: 2526
            },
        }]
    );
    assert_eq!(
        c.retry.intervals,
        [5, 10, 20, 40, 60].map(|m| secs(m * MIN)).to_vec()
    );
    assert_eq!(c.retry.max_age, secs(3 * 24 * 60 * MIN));
    assert_eq!(c.source, None);
}

#[test]
fn empty_file_gives_the_defaults() {
    let c = parse_ok("");
    assert_eq!(c, Config::default());
    assert_eq!(c.smtp.listen, vec![addr("127.0.0.1:2525")]);
    assert_eq!(c.smtp.hostname, crate::defaults::system_hostname());
    assert_eq!(c.smtp.max_message_size, 25 * 1024 * 1024);
    assert_eq!(
        c.smtp.relay_networks,
        vec![net("127.0.0.0/8"), net("::1/128")]
    );
    assert_eq!(c.http.listen, addr("127.0.0.1:8025"));
    assert!(c.dns.nameservers.is_empty());
    assert!(c.routes.is_empty());
    assert_eq!(c.delivery.starttls, StartTls::Opportunistic);
    assert_eq!(c.retry.interval_for_attempt(1), secs(5 * MIN));
    assert_eq!(c.retry.interval_for_attempt(99), secs(60 * MIN));
}

/// The reference in the crate docs is meant to be a working file that
/// spells out the defaults; check that it still is.
#[test]
fn documented_reference_matches_the_defaults() {
    let lib = include_str!("lib.rs");
    let block: String = lib
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .skip_while(|line| *line != "```toml")
        .skip(1)
        .take_while(|line| *line != "```")
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(
        block.contains("[delivery.timeouts]"),
        "reference block not found"
    );
    assert_eq!(parse_ok(&block), Config::default());
}

#[test]
fn listen_and_lists_accept_one_or_many() {
    let c = parse_ok(
        "[smtp]\nlisten = [\"127.0.0.1:25\", \"[::1]:25\"]\nrelay_networks = \"192.0.2.7\"\n\
         [dns]\nnameservers = \"192.0.2.53\"\n",
    );
    assert_eq!(c.smtp.listen, vec![addr("127.0.0.1:25"), addr("[::1]:25")]);
    assert_eq!(c.smtp.relay_networks, vec![net("192.0.2.7/32")]);
    assert_eq!(c.dns.nameservers, vec![addr("192.0.2.53:53")]);
}

#[test]
fn timeouts_may_be_partial_or_a_table_header() {
    let c = parse_ok(
        "[smtp.timeouts]\ncommand = \"1m\"\n[delivery]\ntimeouts = { data = \"1h 30m\" }\n",
    );
    assert_eq!(c.smtp.timeouts.command, secs(MIN));
    assert_eq!(c.smtp.timeouts.data_done, secs(10 * MIN));
    assert_eq!(c.delivery.timeouts.data, secs(90 * MIN));
    assert_eq!(c.delivery.timeouts.rcpt, secs(5 * MIN));
}

#[test]
fn routes_normalize_and_default_the_port() {
    let c = parse_ok(
        "[[route]]\ndomain = \"Example.COM.\"\nsmarthost = \"Relay.Example.net\"\n\
         [[route]]\ndomain = \"*\"\nsmarthost = \"[2001:db8::1]:2525\"\n",
    );
    assert_eq!(c.routes[0].domain, RouteDomain::Exact("example.com".into()));
    assert_eq!(c.routes[0].smarthost.to_string(), "relay.example.net:25");
    assert_eq!(c.routes[1].domain, RouteDomain::Any);
    assert_eq!(c.routes[1].smarthost.to_string(), "[2001:db8::1]:2525");
    assert_eq!(
        c.route_for("EXAMPLE.com").map(|r| r.smarthost.port),
        Some(25)
    );
    assert_eq!(
        c.route_for("other.org").map(|r| r.smarthost.port),
        Some(2525)
    );
}

// ---- errors: one test per kind, checking line, column, key and wording ----

#[test]
fn unknown_key_in_a_table() {
    let (line, column, key, message) = only_error("[smtp]\nlisten = \"127.0.0.1:25\"\nlisen = 1\n");
    assert_eq!((line, column, key.as_str()), (3, 1, "smtp.lisen"));
    assert!(
        message.starts_with("unknown key `lisen`, expected one of `listen`"),
        "{message}"
    );
}

#[test]
fn unknown_key_in_an_inline_table() {
    let (line, column, key, message) =
        only_error("[delivery]\ntimeouts = { data = \"1m\", dta = \"2m\" }\n");
    assert_eq!(
        (line, column, key.as_str()),
        (2, 27, "delivery.timeouts.dta")
    );
    assert!(message.starts_with("unknown key `dta`"), "{message}");
}

#[test]
fn unknown_key_in_a_route() {
    let (line, column, key, _) =
        only_error("[[route]]\ndomain = \"a.example\"\nsmarthost = \"h\"\nport = 1\n");
    assert_eq!((line, column, key.as_str()), (4, 1, "route[0].port"));
}

#[test]
fn unknown_top_level_table_and_key() {
    let (line, column, key, message) = only_error("# comment\n[smtpd]\nlisten = \"x\"\n");
    assert_eq!((line, column, key.as_str()), (2, 2, "smtpd"));
    assert_eq!(
        message,
        "unknown table [smtpd]; the top-level tables are: smtp, http, spool, log, dns, delivery, route, retry, shaping, egress, dkim"
    );
    let (line, column, key, message) = only_error("listen = \"127.0.0.1:25\"\n");
    assert_eq!((line, column, key.as_str()), (1, 1, "listen"));
    assert!(
        message.starts_with("unknown key `listen`; the top-level tables are"),
        "{message}"
    );
}

#[test]
fn bad_size_matches_the_documented_format() {
    // The example from the crate docs, verbatim: line 12, column 20.
    let text = format!("{}[smtp]\nmax_message_size = \"25XB\"\n", "#\n".repeat(10));
    let errors = errors(&text);
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![
            "keel.toml:12:20: smtp.max_message_size: invalid size \"25XB\": expected a number with an optional \
             unit (KB, MB, GB), e.g. \"25MB\""
        ]
    );
}

#[test]
fn zero_and_negative_sizes_and_counts() {
    let all = errors(
        "[smtp]\nmax_message_size = 0\nmax_recipients = 0\nmax_connections = -1\n\
         [delivery]\nport = 70000\nmax_messages_per_connection = 0\n",
    );
    let got: Vec<_> = all
        .iter()
        .map(|e| (e.line, e.key.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, "smtp.max_message_size", "must be greater than zero"),
            (3, "smtp.max_recipients", "must be at least 1, got 0"),
            (4, "smtp.max_connections", "must be at least 1, got -1"),
            (
                6,
                "delivery.port",
                "must be a port number from 1 to 65535, got 70000"
            ),
            (
                7,
                "delivery.max_messages_per_connection",
                "must be at least 1, got 0"
            ),
        ]
    );
    assert_eq!(
        only_error("[smtp]\nmax_message_size = \"0KB\"\n").3,
        "must be greater than zero"
    );
    assert_eq!(
        only_error("[smtp]\nmax_message_size = -5\n").3,
        "size must not be negative, got -5"
    );
}

#[test]
fn bad_duration() {
    let (line, column, key, message) = only_error("[delivery]\nconnect_timeout = \"30x\"\n");
    assert_eq!(
        (line, column, key.as_str()),
        (2, 19, "delivery.connect_timeout")
    );
    assert!(
        message.starts_with("invalid duration \"30x\": unknown time unit \"x\""),
        "{message}"
    );
    let (line, column, key, message) = only_error("[smtp]\ntimeouts = { command = \"0s\" }\n");
    assert_eq!(
        (line, column, key.as_str()),
        (2, 24, "smtp.timeouts.command")
    );
    assert_eq!(message, "must be greater than zero");
    // A bare number is a type error with a hint, not a silent unit guess.
    let (_, _, key, message) = only_error("[retry]\nmax_age = 3600\n");
    assert_eq!(key, "retry.max_age");
    assert_eq!(
        message,
        "invalid type: integer `3600`, expected a duration string such as \"30s\" or \"5m\""
    );
    // Zero idle timeout is allowed: it means "don't keep connections".
    assert_eq!(
        parse_ok("[delivery]\nidle_timeout = \"0s\"\n")
            .delivery
            .idle_timeout,
        Duration::ZERO
    );
}

#[test]
fn bad_address() {
    let (line, column, key, message) =
        only_error("[smtp]\nlisten = [\"127.0.0.1:25\", \"localhost:25\"]\n");
    assert_eq!((line, column, key.as_str()), (2, 27, "smtp.listen[1]"));
    assert!(
        message.starts_with("invalid address \"localhost:25\""),
        "{message}"
    );
    let (line, column, key, message) = only_error("[http]\nlisten = \"127.0.0.1\"\n");
    assert_eq!((line, column, key.as_str()), (2, 10, "http.listen"));
    assert!(message.contains("a port is required"), "{message}");
    let (_, _, key, _) = only_error("[dns]\nnameservers = [\"ns1.example.com\"]\n");
    assert_eq!(key, "dns.nameservers[0]");
    let (_, _, key, message) = only_error("[smtp]\nlisten = []\n");
    assert_eq!(
        (key.as_str(), message.as_str()),
        ("smtp.listen", "must list at least one address")
    );
}

#[test]
fn clashing_listeners() {
    let (line, column, key, message) =
        only_error("[smtp]\nlisten = [\"127.0.0.1:2525\"]\n[http]\nlisten = \"127.0.0.1:2525\"\n");
    assert_eq!((line, column, key.as_str()), (4, 10, "http.listen"));
    assert_eq!(
        message,
        "address 127.0.0.1:2525 is already used by smtp.listen[0]"
    );
    // Port 0 means "any free port" and never clashes.
    parse_ok(
        "[smtp]\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n",
    );
}

#[test]
fn bad_cidr() {
    let (line, column, key, message) =
        only_error("[smtp]\nrelay_networks = [\"::1/128\", \"10.0.0.0/33\"]\n");
    assert_eq!(
        (line, column, key.as_str()),
        (2, 30, "smtp.relay_networks[1]")
    );
    assert!(
        message.starts_with("invalid network \"10.0.0.0/33\""),
        "{message}"
    );
}

#[test]
fn empty_retry_intervals() {
    let (line, column, key, message) = only_error("[retry]\nintervals = []\n");
    assert_eq!((line, column, key.as_str()), (2, 13, "retry.intervals"));
    assert!(
        message.starts_with("must list at least one interval"),
        "{message}"
    );
    let (_, _, key, _) = only_error("[retry]\nintervals = [\"5m\", \"0s\"]\n");
    assert_eq!(key, "retry.intervals[1]");
}

#[test]
fn bad_smarthost() {
    let (line, column, key, message) =
        only_error("[[route]]\ndomain = \"example.com\"\nsmarthost = \"2001:db8::1:25\"\n");
    assert_eq!((line, column, key.as_str()), (3, 13, "route[0].smarthost"));
    assert!(
        message.contains("an IPv6 address must be in brackets"),
        "{message}"
    );
    let (_, _, key, message) =
        only_error("[[route]]\ndomain = \"example.com\"\nsmarthost = \"relay:0\"\n");
    assert_eq!(key, "route[0].smarthost");
    assert!(
        message.contains("the port must be a number from 1 to 65535"),
        "{message}"
    );
}

#[test]
fn route_missing_keys() {
    let (line, column, key, message) = only_error(
        "[[route]]\ndomain = \"a.example\"\nsmarthost = \"h\"\n\n[[route]]\ndomain = \"b.example\"\n",
    );
    assert_eq!((line, column, key.as_str()), (5, 1, "route[1]"));
    assert!(message.starts_with("missing key `smarthost`"), "{message}");
    let (line, _, key, message) = only_error("[[route]]\nsmarthost = \"h\"\n");
    assert_eq!((line, key.as_str()), (1, "route[0]"));
    assert!(message.starts_with("missing key `domain`"), "{message}");
    let (line, _, key, message) = only_error("[[route]]\n");
    assert_eq!((line, key.as_str()), (1, "route[0]"));
    assert_eq!(
        message,
        "empty route: `domain` and `smarthost` are both required"
    );
    let (_, _, key, message) = only_error("[route]\ndomain = \"a.example\"\nsmarthost = \"h\"\n");
    assert_eq!(key, "route");
    assert_eq!(
        message,
        "routes are an array of tables: write [[route]], not [route]"
    );
}

#[test]
fn duplicate_route() {
    let text = "[[route]]\ndomain = \"example.com\"\nsmarthost = \"a\"\n\
                [[route]]\ndomain = \"EXAMPLE.com.\"\nsmarthost = \"b\"\n";
    let (line, column, key, message) = only_error(text);
    assert_eq!((line, column, key.as_str()), (5, 10, "route[1].domain"));
    assert_eq!(
        message,
        "duplicate route for \"example.com\" (first routed at line 2)"
    );
    let (_, _, key, message) = only_error(
        "[[route]]\ndomain = \"*\"\nsmarthost = \"a\"\n[[route]]\ndomain = \"*\"\nsmarthost = \"b\"\n",
    );
    assert_eq!(key, "route[1].domain");
    assert!(
        message.starts_with("duplicate route for \"*\""),
        "{message}"
    );
}

#[test]
fn toml_syntax_error() {
    let (line, column, key, message) = only_error("[smtp]\nlisten = \"127.0.0.1:25\n");
    assert_eq!((line, column, key.as_str()), (2, 23, ""));
    assert!(message.starts_with("TOML syntax error: "), "{message}");
    let (line, column, _, message) = only_error("[smtp]\nmax_recipients = 1\nmax_recipients = 2\n");
    assert_eq!((line, column), (3, 1));
    assert_eq!(message, "TOML syntax error: duplicate key `max_recipients`");
}

#[test]
fn wrong_value_type() {
    let (line, column, key, message) = only_error("[smtp]\nmax_recipients = \"1000\"\n");
    assert_eq!((line, column, key.as_str()), (2, 18, "smtp.max_recipients"));
    assert_eq!(
        message,
        "invalid type: string \"1000\", expected an integer"
    );
    let (_, _, key, message) = only_error("smtp = 5\n");
    assert_eq!(
        (key.as_str(), message.as_str()),
        ("smtp", "invalid type: integer `5`, expected a table")
    );
}

#[test]
fn all_errors_are_reported_in_file_order() {
    let text = "\
[smtp]
listen = [\"bad\", \"127.0.0.1:25\"]
hostname = \"not a name\"
max_message_size = \"25XB\"
relay_networks = [\"10.0.0.0/99\", 10]
timeouts = { comand = \"5m\", data_block = 3 }
max_recipients = \"many\"

[delivery]
starttls = \"always\"
idle_timeout = \"soon\"

[[route]]
domain = \"*.example.com\"
prot = 25

[retry]
intervals = []
max_age = \"0s\"
[bogus]
";
    let errors = errors(text);
    let got: Vec<_> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (2, "smtp.listen[0]"),
            (3, "smtp.hostname"),
            (4, "smtp.max_message_size"),
            (5, "smtp.relay_networks[0]"),
            (5, "smtp.relay_networks[1]"),
            (6, "smtp.timeouts.comand"),
            (6, "smtp.timeouts.data_block"),
            (7, "smtp.max_recipients"),
            (10, "delivery.starttls"),
            (11, "delivery.idle_timeout"),
            (13, "route[0]"),
            (14, "route[0].domain"),
            (15, "route[0].prot"),
            (18, "retry.intervals"),
            (19, "retry.max_age"),
            (20, "bogus"),
        ]
    );
}

#[test]
fn load_reads_a_file_and_records_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keel.toml");
    std::fs::write(&path, "[smtp]\nmax_recipients = 5\n").expect("write");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.smtp.max_recipients, 5);
    assert_eq!(config.source.as_deref(), Some(path.as_path()));

    std::fs::write(&path, "[smtp]\nmax_recipients = 0\n").expect("write");
    let errors = Config::load(&path).expect_err("invalid");
    assert_eq!(
        errors.to_string(),
        format!(
            "{}:2:18: smtp.max_recipients: must be at least 1, got 0",
            path.display()
        )
    );

    let missing = dir.path().join("missing.toml");
    let errors = Config::load(&missing).expect_err("missing file");
    let e = &errors.0[0];
    assert_eq!((e.line, e.column, e.key.as_str()), (0, 0, ""));
    assert!(
        errors
            .to_string()
            .starts_with(&format!("{}: cannot read config file: ", missing.display())),
        "{errors}"
    );
}

/// `contrib/keel.toml`, the commented production sample, must stay a valid file.
#[test]
fn sample_production_config_is_valid() {
    let text = include_str!("../../../contrib/keel.toml");
    let c = parse_ok(text);
    assert_eq!(c.spool.dir, PathBuf::from("/var/lib/keel/spool"));
    assert_eq!(c.log.dir, PathBuf::from("/var/log/keel"));
    assert_eq!(c.log.max_files, Some(400));
    assert_eq!(c.smtp.hostname, "mta1.example.com");
}
