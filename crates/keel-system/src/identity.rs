//! The recovery identity: the private half of the key profiles' secrets are encrypted to.

use std::path::Path;

use age::x25519::Identity;

use crate::error::SystemError;

/// Reads a recovery identity file as `keel keygen` writes it: comment lines starting with `#`
/// and one `AGE-SECRET-KEY-1…` line.
pub fn load_identity(path: &Path) -> Result<Identity, SystemError> {
    let text = std::fs::read_to_string(path).map_err(|e| SystemError::Identity {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    parse_identity(&text).map_err(|detail| SystemError::Identity {
        path: path.to_path_buf(),
        detail,
    })
}

/// Parses the text of an identity file.
pub(crate) fn parse_identity(text: &str) -> Result<Identity, String> {
    let mut keys = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let Some(line) = keys.next() else {
        return Err("it holds no key".into());
    };
    if keys.next().is_some() {
        return Err("it holds more than one key".into());
    }
    line.parse::<Identity>()
        .map_err(|e| format!("not an age X25519 identity: {e}"))
}

/// Decrypts `ciphertext` with `identity`.
pub(crate) fn decrypt(
    identity: &Identity,
    path: &str,
    ciphertext: &[u8],
) -> Result<Vec<u8>, SystemError> {
    age::decrypt(identity, ciphertext).map_err(|e| SystemError::Decrypt {
        path: path.to_string(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn keygen_format_parses() {
        let id = Identity::generate();
        let text = format!(
            "# Keel recovery identity\n# public key: {}\n{}\n",
            id.to_public(),
            id.to_string().expose_secret()
        );
        let back = parse_identity(&text).unwrap();
        assert_eq!(back.to_public().to_string(), id.to_public().to_string());
        assert!(parse_identity("# nothing\n").is_err());
        assert!(parse_identity("age1notasecret\n").is_err());
    }
}
