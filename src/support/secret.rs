//! Secrets (upstream passwords, API keys, admin tokens) come from a file or an environment
//! variable named in the config, are read once, and never print.

use std::fmt;
use std::path::Path;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

pub fn from_file(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    // Secret files written by `echo` or editors end in a newline that is not part of the secret.
    let value = text.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() {
        return Err(format!("secret file {} is empty", path.display()));
    }
    Ok(Secret(value))
}

pub fn from_env(name: &str) -> Result<Secret, String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(Secret(v)),
        Ok(_) => Err(format!("environment variable {name} is empty")),
        Err(_) => Err(format!("environment variable {name} is not set")),
    }
}

/// Exactly one of file or env must be named.
pub fn load(file: Option<&Path>, env: Option<&str>, what: &str) -> Result<Secret, String> {
    match (file, env) {
        (Some(f), None) => from_file(f),
        (None, Some(e)) => from_env(e),
        (Some(_), Some(_)) => Err(format!(
            "{what}: give a file or an environment variable, not both"
        )),
        (None, None) => Err(format!("{what}: name a file or an environment variable")),
    }
}

/// Constant-time comparison for tokens, so response timing does not leak how much matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0 && a.len() == b.len()
}

impl Secret {
    /// Stands in for a secret file under `-t --skip-files`; never used to serve.
    pub fn placeholder() -> Secret {
        Secret("unchecked".to_string())
    }
}

/// `bytes` random bytes from the kernel, as hex (admin page sessions and CSRF tokens, the
/// demo's admin token).
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom is readable");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a file only its owner can read (keys, tokens, ACME account credentials).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
}
