//! DNS-01 answers through RFC 2136 dynamic updates signed with TSIG (RFC 8945, HMAC-SHA256),
//! as BIND, Knot and PowerDNS accept them: add or delete the `_acme-challenge` TXT records of
//! a zone. Only what that needs is here: one UPDATE message over TCP and its answer's RCODE.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TSIG key as `tsig-keygen` writes it: `key "name" { algorithm hmac-sha256; secret "..."; };`
#[derive(Clone)]
pub struct TsigKey {
    pub name: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TsigKey({}, <secret>)", self.name)
    }
}

/// Why a TSIG key file is not one `tsig-keygen` wrote.
#[derive(Debug, thiserror::Error)]
pub enum TsigKeyError {
    #[error("expected `key \"NAME\" {{ ... }}` (tsig-keygen's format)")]
    NoName,
    #[error("expected `algorithm hmac-sha256;`")]
    NoAlgorithm,
    #[error("TSIG algorithm `{0}` is not offered; use hmac-sha256 (tsig-keygen's default)")]
    Algorithm(String),
    #[error("expected `secret \"BASE64\";`")]
    NoSecret,
    #[error("the TSIG secret is not base64: {0}")]
    SecretNotBase64(#[source] base64::DecodeError),
}

/// Why a DNS update did not go through, naming the server (and the key and zone it refused).
#[derive(Debug, thiserror::Error)]
pub enum DnsUpdateError {
    #[error("DNS server {server} did not answer in 10 s")]
    Timeout { server: String },
    #[error("DNS update to {server}: {source}")]
    Exchange {
        server: String,
        source: std::io::Error,
    },
    #[error("DNS server {server} sent a malformed answer")]
    Malformed { server: String },
    #[error("DNS server {server} refused the update: {rcode} (key {key}, zone {zone})")]
    Refused {
        server: String,
        rcode: &'static str,
        key: String,
        zone: String,
    },
}

impl TsigKey {
    pub fn parse(text: &str) -> Result<TsigKey, TsigKeyError> {
        let quoted = |after: &str| -> Option<String> {
            let start = text.find(after)? + after.len();
            let rest = &text[start..];
            let open = rest.find('"')?;
            let close = rest[open + 1..].find('"')?;
            Some(rest[open + 1..open + 1 + close].to_string())
        };
        let name = quoted("key").ok_or(TsigKeyError::NoName)?;
        let algorithm = text
            .split("algorithm")
            .nth(1)
            .and_then(|r| r.split(';').next())
            .map(|a| a.trim().trim_matches('"').to_ascii_lowercase())
            .ok_or(TsigKeyError::NoAlgorithm)?;
        if algorithm != "hmac-sha256" {
            return Err(TsigKeyError::Algorithm(algorithm));
        }
        let secret = quoted("secret").ok_or(TsigKeyError::NoSecret)?;
        use base64::Engine;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .map_err(TsigKeyError::SecretNotBase64)?;
        Ok(TsigKey {
            name: name.trim_end_matches('.').to_ascii_lowercase(),
            secret,
        })
    }
}

pub struct Rfc2136 {
    /// `ip:port` of the primary name server.
    pub server: String,
    pub zone: String,
    pub key: TsigKey,
}

const TYPE_TXT: u16 = 16;
const TYPE_SOA: u16 = 6;
const TYPE_TSIG: u16 = 250;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;
const OPCODE_UPDATE: u16 = 5;

fn push_name(out: &mut Vec<u8>, name: &str) {
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

impl Rfc2136 {
    /// Adds `value` to the TXT records of `name` (a wildcard and its base name share one).
    pub async fn add_txt(&self, name: &str, value: &str) -> Result<(), DnsUpdateError> {
        let mut update = Vec::new();
        push_name(&mut update, name);
        update.extend_from_slice(&TYPE_TXT.to_be_bytes());
        update.extend_from_slice(&CLASS_IN.to_be_bytes());
        update.extend_from_slice(&60u32.to_be_bytes());
        let txt = value.as_bytes();
        update.extend_from_slice(&((txt.len() + 1) as u16).to_be_bytes());
        update.push(txt.len() as u8);
        update.extend_from_slice(txt);
        self.send(1, &update).await
    }

    /// Removes the TXT records of `name`.
    pub async fn clear_txt(&self, name: &str) -> Result<(), DnsUpdateError> {
        let mut updates = Vec::new();
        delete_rrset(&mut updates, name);
        self.send(1, &updates).await
    }

    async fn send(&self, update_count: u16, updates: &[u8]) -> Result<(), DnsUpdateError> {
        let id = (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            & 0xffff) as u16;
        let mut msg = Vec::with_capacity(512);
        msg.extend_from_slice(&id.to_be_bytes());
        msg.extend_from_slice(&(OPCODE_UPDATE << 11).to_be_bytes());
        for count in [1u16, 0, update_count, 0] {
            msg.extend_from_slice(&count.to_be_bytes());
        }
        push_name(&mut msg, &self.zone);
        msg.extend_from_slice(&TYPE_SOA.to_be_bytes());
        msg.extend_from_slice(&CLASS_IN.to_be_bytes());
        msg.extend_from_slice(updates);
        self.sign(&mut msg, id);

        let exchange = async {
            let mut tcp = tokio::net::TcpStream::connect(&self.server).await?;
            let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&msg);
            tcp.write_all(&framed).await?;
            let len = tcp.read_u16().await? as usize;
            let mut answer = vec![0u8; len];
            tcp.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| DnsUpdateError::Timeout {
                server: self.server.clone(),
            })?
            .map_err(|source| DnsUpdateError::Exchange {
                server: self.server.clone(),
                source,
            })?;
        if answer.len() < 12 || answer[..2] != id.to_be_bytes() {
            return Err(DnsUpdateError::Malformed {
                server: self.server.clone(),
            });
        }
        match answer[3] & 0x0f {
            0 => Ok(()),
            rcode => Err(DnsUpdateError::Refused {
                server: self.server.clone(),
                rcode: match rcode {
                    2 => "SERVFAIL",
                    5 => "REFUSED",
                    9 => "NOTAUTH (wrong key or zone)",
                    10 => "NOTZONE",
                    _ => "error",
                },
                key: self.key.name.clone(),
                zone: self.zone.clone(),
            }),
        }
    }

    /// Appends the TSIG record (RFC 8945 4.3): HMAC over the message and the TSIG variables.
    fn sign(&self, msg: &mut Vec<u8>, id: u16) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut algorithm = Vec::new();
        push_name(&mut algorithm, "hmac-sha256");
        let mut key_name = Vec::new();
        push_name(&mut key_name, &self.key.name);
        let time_signed = &now.to_be_bytes()[2..];
        let fudge = 300u16.to_be_bytes();

        let mut signed = msg.clone();
        signed.extend_from_slice(&key_name);
        signed.extend_from_slice(&CLASS_ANY.to_be_bytes());
        signed.extend_from_slice(&0u32.to_be_bytes());
        signed.extend_from_slice(&algorithm);
        signed.extend_from_slice(time_signed);
        signed.extend_from_slice(&fudge);
        signed.extend_from_slice(&0u16.to_be_bytes()); // error
        signed.extend_from_slice(&0u16.to_be_bytes()); // other len
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.key.secret);
        let mac = ring::hmac::sign(&key, &signed);

        let mut rdata = algorithm;
        rdata.extend_from_slice(time_signed);
        rdata.extend_from_slice(&fudge);
        rdata.extend_from_slice(&(mac.as_ref().len() as u16).to_be_bytes());
        rdata.extend_from_slice(mac.as_ref());
        rdata.extend_from_slice(&id.to_be_bytes());
        rdata.extend_from_slice(&0u16.to_be_bytes());
        rdata.extend_from_slice(&0u16.to_be_bytes());

        msg.extend_from_slice(&key_name);
        msg.extend_from_slice(&TYPE_TSIG.to_be_bytes());
        msg.extend_from_slice(&CLASS_ANY.to_be_bytes());
        msg.extend_from_slice(&0u32.to_be_bytes());
        msg.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        msg.extend_from_slice(&rdata);
        // One additional record now: the TSIG.
        msg[10..12].copy_from_slice(&1u16.to_be_bytes());
    }
}

/// "Delete an RRset" (RFC 2136 2.5.2): name, TXT, class ANY, TTL 0, no data.
fn delete_rrset(out: &mut Vec<u8>, name: &str) {
    push_name(out, name);
    out.extend_from_slice(&TYPE_TXT.to_be_bytes());
    out.extend_from_slice(&CLASS_ANY.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tsig_keygen_output() {
        let k = TsigKey::parse(
            "key \"deskgate-acme\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LWJ5dGVz\";\n};\n",
        )
        .unwrap();
        assert_eq!(k.name, "deskgate-acme");
        assert_eq!(k.secret, b"secret-bytes");
        assert!(format!("{k:?}").contains("<secret>"));
        assert!(TsigKey::parse("key \"x\" { algorithm hmac-md5; secret \"AA==\"; };").is_err());
    }
}
