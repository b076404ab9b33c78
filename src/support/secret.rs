//! Secrets (upstream passwords, API keys, admin tokens) come from a file or an environment
//! variable named in the config, are read once, and never print.

use std::fmt;
use std::path::{Path, PathBuf};

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

/// Why a secret could not be read. It names the file or the variable, never the value: no
/// variant holds it (`std::env::VarError::NotUnicode` would, so it is not kept as a source).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret file {} is empty", path.display())]
    EmptyFile { path: PathBuf },
    #[error("environment variable {name} is not set")]
    EnvNotSet { name: String },
    #[error("environment variable {name} is empty")]
    EnvEmpty { name: String },
    #[error("environment variable {name} is not valid UTF-8")]
    EnvNotUtf8 { name: String },
    #[error("{what}: give a file or an environment variable, not both")]
    FileAndEnv { what: String },
    #[error("{what}: name a file or an environment variable")]
    Neither { what: String },
}

pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    // Secret files written by `echo` or editors end in a newline that is not part of the secret.
    let value = text.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() {
        return Err(SecretError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok(Secret(value))
}

pub fn from_env(name: &str) -> Result<Secret, SecretError> {
    let name = || name.to_string();
    match std::env::var(name()) {
        Ok(v) if !v.is_empty() => Ok(Secret(v)),
        Ok(_) => Err(SecretError::EnvEmpty { name: name() }),
        Err(std::env::VarError::NotPresent) => Err(SecretError::EnvNotSet { name: name() }),
        Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::EnvNotUtf8 { name: name() }),
    }
}

/// Exactly one of file or env must be named.
pub fn load(file: Option<&Path>, env: Option<&str>, what: &str) -> Result<Secret, SecretError> {
    match (file, env) {
        (Some(f), None) => from_file(f),
        (None, Some(e)) => from_env(e),
        (Some(_), Some(_)) => Err(SecretError::FileAndEnv {
            what: what.to_string(),
        }),
        (None, None) => Err(SecretError::Neither {
            what: what.to_string(),
        }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn errors_name_the_file_or_variable_never_the_value() {
        let name = "DESKGATE_SECRET_TEST_NOT_UTF8";
        std::env::set_var(name, std::ffi::OsStr::from_bytes(b"hunter2\xff"));
        let e = from_env(name).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("environment variable {name} is not valid UTF-8")
        );
        assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
        std::env::remove_var(name);
        let e = from_env(name).unwrap_err().to_string();
        assert_eq!(e, format!("environment variable {name} is not set"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, "\n").unwrap();
        let e = from_file(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("secret file {} is empty", path.display())
        );
        let e = from_file(&dir.path().join("absent")).unwrap_err();
        let io = std::error::Error::source(&e).expect("the read error under it");
        assert!(io.downcast_ref::<std::io::Error>().is_some());
    }
}
