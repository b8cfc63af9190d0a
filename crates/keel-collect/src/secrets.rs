//! Secrets: encrypted to the recovery key, fingerprinted with a local key.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use keel_profile::{Hash, ProfileFile, Secret};

use crate::CollectError;

/// Encrypts secrets to the recovery recipient and fingerprints them with a local key.
pub struct Secrets {
    recipient: Option<age::x25519::Recipient>,
    key: [u8; 32],
    /// Previous ciphertexts by path: (fingerprint, blob hash, ciphertext).
    previous: BTreeMap<String, (Hash, Hash, Vec<u8>)>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field(
                "recipient",
                &self.recipient.as_ref().map(ToString::to_string),
            )
            .field("key", &"<redacted>")
            .field("previous", &self.previous.len())
            .finish()
    }
}

/// A sealed secret: its row, and the ciphertext blob when one was made.
#[derive(Debug)]
pub struct Sealed {
    /// The `security.secrets` row.
    pub row: Secret,
    /// `(address, ciphertext)`.
    pub blob: Option<(Hash, Vec<u8>)>,
}

impl Secrets {
    /// Sets up sealing to `recipient` (an `age1…` public key), or withholding without one.
    pub fn new(
        recipient: Option<&str>,
        key: [u8; 32],
        previous: Option<&ProfileFile>,
    ) -> Result<Self, CollectError> {
        let recipient = match recipient {
            Some(r) => Some(r.trim().parse::<age::x25519::Recipient>().map_err(|e| {
                CollectError::Setup(format!(
                    "invalid recovery key {r:?}: {e}\nhint: the recovery key is an age X25519 public key starting with `age1` (see `keel keygen`)"
                ))
            })?),
            None => None,
        };
        let mut prev = BTreeMap::new();
        if let Some(p) = previous {
            for s in &p.profile.security.secrets {
                if let Some(c) = s.ciphertext {
                    if let Some(blob) = p.blobs.get(&c) {
                        prev.insert(s.path.clone(), (s.fingerprint, c, blob.0.clone()));
                    }
                }
            }
        }
        Ok(Secrets {
            recipient,
            key,
            previous: prev,
        })
    }

    /// Keyed fingerprint of secret material: equal inputs give equal fingerprints on this host,
    /// and nobody without the key can test a guess against it.
    pub fn fingerprint(&self, data: &[u8]) -> Hash {
        Hash::keyed(&self.key, data)
    }

    /// Seals the secret content of `path`.
    pub fn seal(
        &self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Sealed, CollectError> {
        let fingerprint = self.fingerprint(data);
        let mut row = Secret {
            path: path.to_string(),
            fingerprint,
            ciphertext: None,
            withheld: true,
            mode,
            uid,
            gid,
        };
        let Some(recipient) = &self.recipient else {
            return Ok(Sealed { row, blob: None });
        };
        row.withheld = false;
        // Unchanged secrets keep their previous ciphertext: age output is randomised, and a new
        // ciphertext every capture would travel every time for nothing.
        if let Some((fp, h, ct)) = self.previous.get(path) {
            if *fp == fingerprint {
                row.ciphertext = Some(*h);
                return Ok(Sealed {
                    row,
                    blob: Some((*h, ct.clone())),
                });
            }
        }
        let ct = age::encrypt(recipient, data)
            .map_err(|e| CollectError::Setup(format!("cannot encrypt {path}: {e}")))?;
        let h = Hash::of(&ct);
        row.ciphertext = Some(h);
        Ok(Sealed {
            row,
            blob: Some((h, ct)),
        })
    }
}

/// Loads the fingerprint key from `state_dir`, creating it on first use.
pub fn load_or_create_key(state_dir: &Path) -> Result<[u8; 32], CollectError> {
    let path = state_dir.join("fingerprint.key");
    let hint = |e: &dyn std::fmt::Display| {
        CollectError::Setup(format!(
            "cannot use the fingerprint key {}: {e}\nhint: run as root, or choose a writable directory with --state-dir",
            path.display()
        ))
    };
    match std::fs::read(&path) {
        Ok(b) if b.len() == 32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(&b);
            return Ok(k);
        }
        Ok(_) => return Err(hint(&"the file is not 32 bytes long")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(hint(&e)),
    }
    let mut k = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut k))
        .map_err(|e| hint(&e))?;
    std::fs::create_dir_all(state_dir).map_err(|e| hint(&e))?;
    // Written under a temporary name and renamed, so a crash never leaves a short key behind.
    let tmp = state_dir.join(format!(".fingerprint.key.{}", std::process::id()));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| hint(&e))?;
        f.write_all(&k)
            .and_then(|()| f.sync_all())
            .map_err(|e| hint(&e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| hint(&e))?;
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn sealed_secret_decrypts_with_the_recovery_identity() {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public().to_string();
        let s = Secrets::new(Some(&recipient), [7; 32], None).unwrap();
        let plain = b"root:$6$salt$hash:19000:0:99999:7:::\n";
        let sealed = s.seal("/etc/shadow", plain, 0o640, 0, 42).unwrap();
        assert!(!sealed.row.withheld);
        let (h, ct) = sealed.blob.unwrap();
        assert_eq!(Some(h), sealed.row.ciphertext);
        assert!(
            !ct.windows(10).any(|w| w == &plain[..10]),
            "ciphertext must not hold the plaintext"
        );
        let back = age::decrypt(&identity, &ct).unwrap();
        assert_eq!(back, plain);
        // The identity's text form parses back (what `keel keygen` writes).
        let reparsed: age::x25519::Identity = identity.to_string().expose_secret().parse().unwrap();
        assert_eq!(reparsed.to_public().to_string(), recipient);
    }

    #[test]
    fn without_a_key_secrets_are_withheld_but_fingerprinted() {
        let s = Secrets::new(None, [1; 32], None).unwrap();
        let a = s.seal("/etc/shadow", b"x", 0o640, 0, 42).unwrap();
        assert!(a.row.withheld && a.blob.is_none() && a.row.ciphertext.is_none());
        assert_eq!(a.row.fingerprint, s.fingerprint(b"x"));
        assert_ne!(
            a.row.fingerprint,
            Hash::of(b"x"),
            "the fingerprint is keyed, not a plain hash"
        );
        let other = Secrets::new(None, [2; 32], None).unwrap();
        assert_ne!(other.fingerprint(b"x"), a.row.fingerprint);
    }

    #[test]
    fn unchanged_secret_keeps_its_previous_ciphertext() {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public().to_string();
        let first = Secrets::new(Some(&recipient), [3; 32], None).unwrap();
        let sealed = first.seal("/etc/shadow", b"v1", 0o640, 0, 42).unwrap();
        let mut prev = ProfileFile::default();
        let (h, ct) = sealed.blob.clone().unwrap();
        prev.blobs.insert(h, keel_profile::Blob(ct));
        prev.profile.security.secrets.push(sealed.row.clone());
        let second = Secrets::new(Some(&recipient), [3; 32], Some(&prev)).unwrap();
        assert_eq!(
            second
                .seal("/etc/shadow", b"v1", 0o640, 0, 42)
                .unwrap()
                .row
                .ciphertext,
            Some(h)
        );
        assert_ne!(
            second
                .seal("/etc/shadow", b"v2", 0o640, 0, 42)
                .unwrap()
                .row
                .ciphertext,
            Some(h)
        );
    }

    #[test]
    fn bad_recovery_key_is_a_clear_error() {
        let e = Secrets::new(Some("not-a-key"), [0; 32], None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("invalid recovery key") && e.contains("hint:"),
            "{e}"
        );
    }
}
