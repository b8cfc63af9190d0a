//! What an agent sends the server, and how it is signed.
//!
//! An upload carries a profile either whole or as a [`Patch`] against the last profile the
//! server acknowledged, the blobs the server asked for, and the agent's ed25519 signature over
//! the profile hash. The server rebuilds the profile, checks that it hashes to the signed hash,
//! and only then stores it: an upload is all or nothing.

use std::collections::BTreeMap;
use std::io::Read;

use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};

use crate::envelope::{Blob, MAX_PAYLOAD};
use crate::hash::Hash;
use crate::patch::Patch;

/// Domain separation for profile signatures.
const SIGNING_CONTEXT: &[u8] = b"keel profile v1\0";

/// The profile, whole or as a patch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadBody {
    /// The profile's canonical CBOR bytes.
    Full(Blob),
    /// Row changes against the server's copy of `Patch::base`.
    Patch(Box<Patch>),
}

/// One profile on its way to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upload {
    /// The sending agent.
    pub agent_id: String,
    /// The profile's identity, which the signature covers.
    pub profile_hash: Hash,
    /// ed25519 signature over the profile hash.
    pub signature: Blob,
    /// The profile.
    pub body: UploadBody,
    /// Blobs the server does not hold yet.
    #[serde(default)]
    pub blobs: BTreeMap<Hash, Blob>,
}

/// Why an upload could not be read or verified.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Not zstd/CBOR, truncated or too large.
    #[error("malformed upload: {0}")]
    Malformed(String),
    /// The signature does not verify.
    #[error("signature does not verify for agent {0}")]
    BadSignature(String),
}

impl Upload {
    /// zstd-compressed CBOR.
    pub fn encode(&self) -> Vec<u8> {
        let mut cbor = Vec::new();
        ciborium::into_writer(self, &mut cbor).expect("serialising to memory cannot fail");
        zstd::bulk::compress(&cbor, 3).expect("compressing in memory cannot fail")
    }

    /// Reads an upload, refusing anything malformed or larger than the profile limit.
    pub fn decode(data: &[u8]) -> Result<Self, UploadError> {
        let dec =
            zstd::stream::Decoder::new(data).map_err(|e| UploadError::Malformed(e.to_string()))?;
        let mut cbor = Vec::new();
        dec.take(MAX_PAYLOAD + 1)
            .read_to_end(&mut cbor)
            .map_err(|e| UploadError::Malformed(format!("not a zstd stream or truncated: {e}")))?;
        if cbor.len() as u64 > MAX_PAYLOAD {
            return Err(UploadError::Malformed("upload too large".into()));
        }
        ciborium::from_reader(&cbor[..]).map_err(|e| UploadError::Malformed(e.to_string()))
    }

    /// Checks the signature with the agent's public key.
    pub fn verify(&self, public_key: &[u8]) -> Result<(), UploadError> {
        let bad = || UploadError::BadSignature(self.agent_id.clone());
        let key: [u8; 32] = public_key.try_into().map_err(|_| bad())?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| bad())?;
        let sig = ed25519_dalek::Signature::from_slice(&self.signature.0).map_err(|_| bad())?;
        key.verify(&signing_message(&self.profile_hash), &sig)
            .map_err(|_| bad())
    }
}

fn signing_message(hash: &Hash) -> Vec<u8> {
    let mut m = SIGNING_CONTEXT.to_vec();
    m.extend_from_slice(&hash.0);
    m
}

/// An agent's signing key.
pub struct AgentKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKey")
            .field("public", &Hash(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl AgentKey {
    /// A key from 32 secret bytes (from a key file, or from the OS random source).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        AgentKey(ed25519_dalek::SigningKey::from_bytes(&secret))
    }

    /// The 32 secret bytes, for the key file.
    pub fn secret(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key the server records at enrollment.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Signs a profile hash.
    pub fn sign(&self, hash: &Hash) -> Vec<u8> {
        self.0.sign(&signing_message(hash)).to_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let key = AgentKey::from_secret([9; 32]);
        let h = Hash::of(b"profile");
        let up = Upload {
            agent_id: "a1".into(),
            profile_hash: h,
            signature: Blob(key.sign(&h)),
            body: UploadBody::Full(Blob(vec![1, 2, 3])),
            blobs: BTreeMap::new(),
        };
        let back = Upload::decode(&up.encode()).unwrap();
        assert_eq!(back, up);
        back.verify(&key.public_key()).unwrap();
        let other = AgentKey::from_secret([8; 32]);
        assert!(back.verify(&other.public_key()).is_err());
        let mut forged = back.clone();
        forged.profile_hash = Hash::of(b"other");
        assert!(forged.verify(&key.public_key()).is_err());
        assert!(Upload::decode(b"garbage").is_err());
    }
}
