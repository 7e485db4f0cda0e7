//! The outbound SMTP client: one connection to one server, reused for many transactions.
//!
//! Built on smtp-proto's reply parser and tokio(-rustls) rather than a general-purpose mail
//! client because an MTA needs what those hide: PIPELINING under its own control, a timeout
//! per protocol phase (RFC 5321 §4.5.3.2), the raw replies per recipient (for retry and bounce
//! decisions), connection reuse across messages, and opportunistic STARTTLS.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::events::Response;

/// How much message data one `data_block` timeout covers.
const WRITE_CHUNK: usize = 64 * 1024;

/// Per-phase timeouts (RFC 5321 §4.5.3.2), plus the TCP connect.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub phases: keel_config::DeliveryTimeouts,
}

/// Why a connection or transaction failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a failure where the session cannot go on (greeting, EHLO, 421).
    #[error("{0:?}")]
    Reply(Response),
    #[error("{stage}: {source}")]
    Io {
        stage: &'static str,
        source: std::io::Error,
    },
    #[error("{0}: timed out")]
    Timeout(&'static str),
    #[error("{stage}: {detail}")]
    Protocol { stage: &'static str, detail: String },
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
}

impl ClientError {
    /// The error as a reply-shaped record for events and retry decisions.
    pub fn response(&self) -> Response {
        match self {
            ClientError::Reply(r) => r.clone(),
            ClientError::Io { stage, source } => local(format!("{stage}: {source}")),
            ClientError::Timeout(stage) => Response {
                code: 0,
                enhanced: "4.4.2".into(),
                text: format!("{stage}: timed out"),
            },
            ClientError::Protocol { stage, detail } => Response {
                code: 0,
                enhanced: "4.5.0".into(),
                text: format!("{stage}: {detail}"),
            },
            ClientError::Tls(e) => local(format!("TLS handshake failed: {e}")),
        }
    }
}

/// Says why a server's bytes were not a reply, for people (events, bounces).
fn reply_error(e: smtp_proto::Error) -> String {
    match e {
        smtp_proto::Error::ResponseTooLong => format!(
            "reply longer than {} octets",
            smtp_proto::response::parser::MAX_RESPONSE_LENGTH
        ),
        smtp_proto::Error::SyntaxError { syntax } => {
            format!("not an SMTP reply ({})", syntax.to_ascii_lowercase())
        }
        smtp_proto::Error::InvalidResponse { code } => format!("invalid reply code {code}"),
        other => format!("unparseable reply ({other:?})"),
    }
}

fn local(text: String) -> Response {
    Response {
        code: 0,
        enhanced: "4.4.1".into(),
        text,
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the server's EHLO said it supports.
#[derive(Debug, Default, Clone, Copy)]
pub struct Capabilities {
    pub pipelining: bool,
    pub starttls: bool,
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
}

impl Capabilities {
    fn parse(ehlo_text: &str) -> Self {
        let mut caps = Capabilities::default();
        for line in ehlo_text.lines().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(kw) = words.next() else { continue };
            match kw.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "STARTTLS" => caps.starttls = true,
                "8BITMIME" => caps.eightbitmime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "SIZE" => caps.size = words.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0),
                _ => {}
            }
        }
        caps
    }
}

/// A message to send in one transaction.
pub struct Outgoing<'a> {
    /// Reverse path; empty for `<>`.
    pub sender: &'a str,
    pub rcpts: &'a [String],
    /// The message as spooled (Received header included).
    pub body: &'a [u8],
}

/// An open, greeted connection.
pub struct Connection {
    io: Box<dyn Io>,
    rbuf: Vec<u8>,
    parser: ResponseReceiver,
    pub peer: SocketAddr,
    pub caps: Capabilities,
    pub tls: bool,
    timeouts: Timeouts,
    /// Set once the server said 421 or an I/O error happened: do not reuse.
    broken: bool,
    wbuf: Vec<u8>,
}

/// Opens a connection: TCP, greeting, EHLO (HELO fallback), and STARTTLS when offered and `tls`
/// is given. `server_name` is the host name used for TLS SNI.
pub async fn connect(
    addr: SocketAddr,
    bind: Option<std::net::IpAddr>,
    server_name: &str,
    helo_name: &str,
    timeouts: Timeouts,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Connection, ClientError> {
    let tcp = tokio::time::timeout(timeouts.connect, tcp_connect(addr, bind))
        .await
        .map_err(|_| ClientError::Timeout("connect"))?
        .map_err(|source| ClientError::Io {
            stage: "connect",
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let mut conn = Connection {
        io: Box::new(tcp),
        rbuf: Vec::with_capacity(4096),
        parser: ResponseReceiver::default(),
        peer: addr,
        caps: Capabilities::default(),
        tls: false,
        timeouts,
        broken: false,
        wbuf: Vec::with_capacity(16 * 1024),
    };
    let greeting = conn
        .read_reply("greeting", timeouts.phases.greeting)
        .await?;
    if greeting.code != 220 {
        return Err(ClientError::Reply(greeting));
    }
    conn.hello(helo_name).await?;
    if let Some(tls_config) = tls
        && conn.caps.starttls
    {
        conn.write_all(b"STARTTLS\r\n", "STARTTLS").await?;
        let r = conn.read_reply("STARTTLS", timeouts.phases.ehlo).await?;
        if r.code == 220 {
            conn = conn.start_tls(tls_config, server_name).await?;
            conn.hello(helo_name).await?;
        }
        // A refused STARTTLS leaves the session usable in plain text (RFC 3207 §4).
    }
    Ok(conn)
}

/// TCP connect, from `bind` when given (an egress source's address).
async fn tcp_connect(
    addr: SocketAddr,
    bind: Option<std::net::IpAddr>,
) -> std::io::Result<TcpStream> {
    let Some(local) = bind else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(addr).await
}

impl Connection {
    async fn hello(&mut self, helo_name: &str) -> Result<(), ClientError> {
        self.write_all(format!("EHLO {helo_name}\r\n").as_bytes(), "EHLO")
            .await?;
        let r = self.read_reply("EHLO", self.timeouts.phases.ehlo).await?;
        if r.code == 250 {
            self.caps = Capabilities::parse(&r.text);
            return Ok(());
        }
        if r.code == 421 || r.code < 500 {
            return Err(ClientError::Reply(r));
        }
        // An old server that does not know EHLO.
        self.write_all(format!("HELO {helo_name}\r\n").as_bytes(), "HELO")
            .await?;
        let r = self.read_reply("HELO", self.timeouts.phases.ehlo).await?;
        if r.code != 250 {
            return Err(ClientError::Reply(r));
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    async fn start_tls(
        self,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<Connection, ClientError> {
        let name = rustls_pki_types::ServerName::try_from(server_name.to_string())
            .unwrap_or_else(|_| rustls_pki_types::ServerName::IpAddress(self.peer.ip().into()));
        let connector = tokio_rustls::TlsConnector::from(config);
        // A handshake that stalls is as broken as one that fails: both are `Tls`, so the
        // caller falls back to plain text instead of retrying the same stall for ever.
        let stream =
            tokio::time::timeout(self.timeouts.phases.ehlo, connector.connect(name, self.io))
                .await
                .map_err(|_| {
                    ClientError::Tls(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "timed out",
                    ))
                })?
                .map_err(ClientError::Tls)?;
        Ok(Connection {
            io: Box::new(stream),
            rbuf: Vec::with_capacity(4096),
            parser: ResponseReceiver::default(),
            peer: self.peer,
            caps: Capabilities::default(),
            tls: true,
            timeouts: self.timeouts,
            broken: false,
            wbuf: self.wbuf,
        })
    }

    /// True while the connection can carry another transaction.
    pub fn reusable(&self) -> bool {
        !self.broken
    }

    /// Writes `bytes`, allowing `data_block` for each chunk of up to [`WRITE_CHUNK`] octets
    /// (RFC 5321 §4.5.3.2.5: the timeout is per TCP send, not for the whole message, so a large
    /// message to a slow but live receiver is not cut off).
    async fn write_all(&mut self, bytes: &[u8], stage: &'static str) -> Result<(), ClientError> {
        let timeout = self.timeouts.phases.data_block;
        let mut r = Ok(Ok(()));
        for chunk in bytes.chunks(WRITE_CHUNK) {
            r = tokio::time::timeout(timeout, self.io.write_all(chunk)).await;
            if !matches!(r, Ok(Ok(()))) {
                break;
            }
        }
        if matches!(r, Ok(Ok(()))) {
            r = tokio::time::timeout(timeout, self.io.flush()).await;
        }
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => {
                self.broken = true;
                Err(ClientError::Io { stage, source })
            }
            Err(_) => {
                self.broken = true;
                Err(ClientError::Timeout(stage))
            }
        }
    }

    async fn write_wbuf(&mut self, stage: &'static str) -> Result<(), ClientError> {
        let buf = std::mem::take(&mut self.wbuf);
        let r = self.write_all(&buf, stage).await;
        self.wbuf = buf;
        self.wbuf.clear();
        r
    }

    /// Reads one (possibly multi-line) reply.
    async fn read_reply(
        &mut self,
        stage: &'static str,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if !self.rbuf.is_empty() {
                let mut it = self.rbuf.iter();
                let parsed = self.parser.parse(&mut it);
                let left = it.as_slice().len();
                let consumed = self.rbuf.len() - left;
                self.rbuf.drain(..consumed);
                match parsed {
                    Ok(r) => {
                        self.parser.reset();
                        let resp = Response {
                            code: r.code,
                            enhanced: if r.esc[0] == 0 {
                                String::new()
                            } else {
                                format!("{}.{}.{}", r.esc[0], r.esc[1], r.esc[2])
                            },
                            text: r.message,
                        };
                        if resp.code == 421 {
                            self.broken = true;
                        }
                        if !(200..600).contains(&resp.code) {
                            self.broken = true;
                            return Err(ClientError::Protocol {
                                stage,
                                detail: format!("invalid reply code {}", resp.code),
                            });
                        }
                        return Ok(resp);
                    }
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    Err(e) => {
                        self.broken = true;
                        return Err(ClientError::Protocol {
                            stage,
                            detail: reply_error(e),
                        });
                    }
                }
            }
            let mut chunk = [0u8; 8192];
            let n = match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) => {
                    self.broken = true;
                    return Err(ClientError::Timeout(stage));
                }
                Ok(Err(source)) => {
                    self.broken = true;
                    return Err(ClientError::Io { stage, source });
                }
                Ok(Ok(0)) => {
                    self.broken = true;
                    return Err(ClientError::Io {
                        stage,
                        source: std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "connection closed by server",
                        ),
                    });
                }
                Ok(Ok(n)) => n,
            };
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one message. Returns one reply per recipient (the RCPT refusal for refused
    /// recipients, the final DATA reply for accepted ones). `Err` means the connection failed
    /// before the outcome was known: every recipient is then undecided (retry).
    pub async fn send(&mut self, msg: &Outgoing<'_>) -> Result<Vec<Response>, ClientError> {
        let size = msg.body.len() as u64;
        if let Some(max) = self.caps.size
            && size > max
        {
            let r = Response {
                code: 552,
                enhanced: "5.3.4".into(),
                text: format!("message size {size} exceeds the server's limit of {max}"),
            };
            return Ok(vec![r; msg.rcpts.len()]);
        }
        let mut mail = format!("MAIL FROM:<{}>", msg.sender);
        if self.caps.size.is_some() {
            mail.push_str(&format!(" SIZE={size}"));
        }
        if self.caps.eightbitmime && msg.body.iter().any(|&b| b >= 0x80) {
            mail.push_str(" BODY=8BITMIME");
        }
        if self.caps.smtputf8 && (!msg.sender.is_ascii() || msg.rcpts.iter().any(|r| !r.is_ascii()))
        {
            mail.push_str(" SMTPUTF8");
        }
        mail.push_str("\r\n");

        let pipelining = self.caps.pipelining;
        self.wbuf.clear();
        self.wbuf.extend_from_slice(mail.as_bytes());
        let mail_reply = if pipelining {
            for r in msg.rcpts {
                self.wbuf
                    .extend_from_slice(format!("RCPT TO:<{r}>\r\n").as_bytes());
            }
            self.wbuf.extend_from_slice(b"DATA\r\n");
            self.write_wbuf("MAIL").await?;
            self.read_reply("MAIL", self.timeouts.phases.mail).await?
        } else {
            self.write_wbuf("MAIL").await?;
            self.read_reply("MAIL", self.timeouts.phases.mail).await?
        };

        let mut rcpt_replies = Vec::with_capacity(msg.rcpts.len());
        if pipelining {
            for _ in msg.rcpts {
                rcpt_replies.push(self.read_reply("RCPT", self.timeouts.phases.rcpt).await?);
            }
        } else if mail_reply.code / 100 == 2 {
            for r in msg.rcpts {
                self.write_all(format!("RCPT TO:<{r}>\r\n").as_bytes(), "RCPT")
                    .await?;
                let reply = self.read_reply("RCPT", self.timeouts.phases.rcpt).await?;
                let stop = reply.code == 421;
                rcpt_replies.push(reply);
                if stop {
                    break;
                }
            }
        }

        if mail_reply.code / 100 != 2 {
            if pipelining {
                // Drain the DATA reply the server owes us.
                let _ = self.read_reply("DATA", self.timeouts.phases.data).await?;
            }
            self.reset().await;
            return Ok(vec![mail_reply; msg.rcpts.len()]);
        }
        // Pad with the last reply if the server hung up mid-list (421).
        while rcpt_replies.len() < msg.rcpts.len() {
            let last = rcpt_replies.last().cloned().unwrap_or(mail_reply.clone());
            rcpt_replies.push(last);
        }
        let accepted: Vec<usize> = rcpt_replies
            .iter()
            .enumerate()
            .filter(|(_, r)| r.code / 100 == 2)
            .map(|(i, _)| i)
            .collect();

        let data_reply = if pipelining {
            self.read_reply("DATA", self.timeouts.phases.data).await?
        } else if !accepted.is_empty() && !self.broken {
            self.write_all(b"DATA\r\n", "DATA").await?;
            self.read_reply("DATA", self.timeouts.phases.data).await?
        } else {
            self.reset().await;
            return Ok(rcpt_replies);
        };

        if accepted.is_empty() {
            // The server refused every recipient; it should also have refused DATA.
            if data_reply.code == 354 {
                // Never send a body nobody accepted: abort the transaction.
                self.broken = true;
            } else {
                self.reset().await;
            }
            return Ok(rcpt_replies);
        }
        if data_reply.code != 354 {
            for &i in &accepted {
                rcpt_replies[i] = data_reply.clone();
            }
            self.reset().await;
            return Ok(rcpt_replies);
        }

        self.wbuf.clear();
        keel_smtp::data::stuff(msg.body, &mut self.wbuf);
        self.write_wbuf("DATA body").await?;
        let done = self
            .read_reply("end of DATA", self.timeouts.phases.data_done)
            .await?;
        for &i in &accepted {
            rcpt_replies[i] = done.clone();
        }
        Ok(rcpt_replies)
    }

    /// RSET after a failed transaction; a failure here just marks the connection broken.
    async fn reset(&mut self) {
        if self.broken {
            return;
        }
        if self.write_all(b"RSET\r\n", "RSET").await.is_err() {
            return;
        }
        match self.read_reply("RSET", self.timeouts.phases.mail).await {
            Ok(r) if r.code == 250 => {}
            _ => self.broken = true,
        }
    }

    /// Says goodbye (best effort, briefly) and closes.
    pub async fn quit(mut self) {
        if self.broken {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            if self.write_all(b"QUIT\r\n", "QUIT").await.is_ok() {
                let _ = self.read_reply("QUIT", Duration::from_secs(5)).await;
            }
            let _ = Pin::new(&mut self.io).shutdown().await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_capabilities() {
        let c = Capabilities::parse(
            "mx.example Hello\nPIPELINING\nSIZE 1000\nstarttls\n8BITMIME\nSMTPUTF8\nCHUNKING",
        );
        assert!(c.pipelining && c.starttls && c.eightbitmime && c.smtputf8);
        assert_eq!(c.size, Some(1000));
        let c = Capabilities::parse("mx.example\nSIZE");
        assert_eq!(c.size, None);
    }
}
