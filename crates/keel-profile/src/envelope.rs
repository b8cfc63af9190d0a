//! The profile file: a small fixed header, then a zstd-compressed CBOR payload.
//!
//! ```text
//! offset  size  field
//!      0     8  magic  89 'K' 'E' 'E' 'L' 0D 0A 1A   (catches text-mode mangling, as PNG does)
//!      8     2  format version, little endian         (1)
//!     10     1  compression                           (1 = zstd)
//!     11     1  encoding                              (1 = CBOR)
//!     12    32  BLAKE3 of the profile's CBOR bytes    (the profile's identity)
//!     44     …  zstd frame with checksum: CBOR payload {profile: bytes, blobs, signature}
//! ```
//!
//! Blobs are the content of modified and unowned configuration files and secrets' ciphertext,
//! each addressed by its BLAKE3 hash; the profile refers to them by hash, so the profile's
//! identity does not depend on whether its blobs travel with it.
//!
//! Formats are forever: every version ever written stays decodable, and a golden file of each
//! is decoded by the tests.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

use base64::Engine as _;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::Hash;
use crate::model::Profile;

/// The first eight bytes of every profile file.
pub const MAGIC: [u8; 8] = [0x89, b'K', b'E', b'E', b'L', 0x0d, 0x0a, 0x1a];
/// The format version this build writes.
pub const FORMAT_VERSION: u16 = 1;
/// The oldest format version this build reads.
pub const OLDEST_FORMAT_VERSION: u16 = 1;
const HEADER_LEN: usize = 44;
const COMPRESSION_ZSTD: u8 = 1;
const ENCODING_CBOR: u8 = 1;
/// Decompressed payloads larger than this are refused (a corrupt or hostile file must not
/// exhaust memory).
pub const MAX_PAYLOAD: u64 = 128 * 1024 * 1024;
/// zstd level: 19 costs about 30 ms on a typical profile and saves a quarter over level 3.
const ZSTD_LEVEL: i32 = 19;

/// Why a profile could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Too short to hold the header.
    #[error(
        "file is truncated: {len} bytes is shorter than a profile header ({HEADER_LEN} bytes)"
    )]
    Truncated {
        /// Bytes present.
        len: usize,
    },
    /// Wrong magic bytes.
    #[error("not a Keel profile (unknown file signature)")]
    NotAProfile,
    /// A version this build does not know.
    #[error("unsupported profile format version {0} (this keel reads versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})")]
    UnsupportedVersion(u16),
    /// Unknown compression or encoding byte.
    #[error("unsupported {what} code {code} in profile header")]
    UnsupportedCodec {
        /// `compression` or `encoding`.
        what: &'static str,
        /// The byte found.
        code: u8,
    },
    /// zstd failed: truncated or corrupt payload.
    #[error("profile payload is corrupt or truncated: {0}")]
    Decompress(String),
    /// Payload larger than [`MAX_PAYLOAD`].
    #[error("profile payload expands beyond {MAX_PAYLOAD} bytes; refusing it")]
    TooLarge,
    /// CBOR or JSON did not match the model.
    #[error("profile content is malformed: {0}")]
    Malformed(String),
    /// The profile bytes do not hash to the header's hash.
    #[error("profile content does not match its hash (expected {expected}, found {found}): the file was altered or damaged")]
    HashMismatch {
        /// From the header.
        expected: Hash,
        /// Computed.
        found: Hash,
    },
    /// A blob's content does not hash to its address.
    #[error("blob {0} does not match its hash: the file was altered or damaged")]
    BlobMismatch(Hash),
}

/// Why a profile could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// CBOR serialisation failed.
    #[error("cannot encode profile: {0}")]
    Cbor(String),
    /// zstd failed.
    #[error("cannot compress profile: {0}")]
    Compress(#[from] std::io::Error),
}

/// Content of a file or a secret's ciphertext.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(Some(1))?;
            match std::str::from_utf8(&self.0) {
                Ok(text) => m.serialize_entry("text", text)?,
                Err(_) => m.serialize_entry(
                    "base64",
                    &base64::engine::general_purpose::STANDARD.encode(&self.0),
                )?,
            }
            m.end()
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("blob bytes or {\"text\"|\"base64\": …}")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Blob, A::Error> {
                let Some((k, v)) = map.next_entry::<String, String>()? else {
                    return Err(de::Error::custom("empty blob object"));
                };
                match k.as_str() {
                    "text" => Ok(Blob(v.into_bytes())),
                    "base64" => base64::engine::general_purpose::STANDARD
                        .decode(v)
                        .map(Blob)
                        .map_err(de::Error::custom),
                    other => Err(de::Error::unknown_field(other, &["text", "base64"])),
                }
            }
        }
        if d.is_human_readable() {
            d.deserialize_map(V)
        } else {
            // `byte_buf`, not `bytes`: ciborium hands out borrowed bytes only up to its scratch
            // buffer size and refuses larger byte strings otherwise.
            d.deserialize_byte_buf(V)
        }
    }
}

/// A profile with the blobs it refers to: the unit that is written, read and shipped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProfileFile {
    /// The profile.
    pub profile: Profile,
    /// Content blobs by address.
    pub blobs: BTreeMap<Hash, Blob>,
    /// Agent signature over the profile hash (ed25519), when signed.
    pub signature: Option<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct PayloadV1 {
    #[serde(with = "bytes")]
    profile: Vec<u8>,
    #[serde(default)]
    blobs: BTreeMap<Hash, Blob>,
    #[serde(default)]
    signature: Option<Blob>,
}

mod bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(super::Blob::deserialize(d)?.0)
    }
}

/// The profile's canonical CBOR bytes.
pub fn profile_bytes(profile: &Profile) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64 * 1024);
    ciborium::into_writer(profile, &mut out).map_err(|e| EncodeError::Cbor(e.to_string()))?;
    Ok(out)
}

/// The profile's identity: BLAKE3 of its canonical CBOR bytes.
pub fn profile_hash(profile: &Profile) -> Result<Hash, EncodeError> {
    Ok(Hash::of(&profile_bytes(profile)?))
}

impl ProfileFile {
    /// The profile's identity.
    pub fn hash(&self) -> Result<Hash, EncodeError> {
        profile_hash(&self.profile)
    }

    /// Adds a blob and returns its address.
    pub fn add_blob(&mut self, data: Vec<u8>) -> Hash {
        let h = Hash::of(&data);
        self.blobs.entry(h).or_insert(Blob(data));
        h
    }

    /// Encodes to the compact binary file format.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let profile = profile_bytes(&self.profile)?;
        let hash = Hash::of(&profile);
        let payload = PayloadV1 {
            profile,
            blobs: self.blobs.clone(),
            signature: self.signature.clone().map(Blob),
        };
        let mut cbor = Vec::with_capacity(128 * 1024);
        ciborium::into_writer(&payload, &mut cbor).map_err(|e| EncodeError::Cbor(e.to_string()))?;

        let mut out = Vec::with_capacity(HEADER_LEN + cbor.len() / 4);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.push(COMPRESSION_ZSTD);
        out.push(ENCODING_CBOR);
        out.extend_from_slice(&hash.0);
        let mut enc = zstd::stream::Encoder::new(&mut out, ZSTD_LEVEL)?;
        enc.include_checksum(true)?;
        enc.set_pledged_src_size(Some(cbor.len() as u64))?;
        std::io::Write::write_all(&mut enc, &cbor)?;
        enc.finish()?;
        Ok(out)
    }

    /// Decodes the binary format, or the JSON document `keel capture --format json` writes.
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let first = data.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'{') {
            return Self::from_json(data);
        }
        if data.len() < HEADER_LEN {
            if data.len() >= 8 && data[..8] != MAGIC {
                return Err(DecodeError::NotAProfile);
            }
            return Err(DecodeError::Truncated { len: data.len() });
        }
        if data[..8] != MAGIC {
            return Err(DecodeError::NotAProfile);
        }
        let version = u16::from_le_bytes([data[8], data[9]]);
        match version {
            1 => decode_v1(data),
            v => Err(DecodeError::UnsupportedVersion(v)),
        }
    }

    /// The canonical JSON document: sorted keys, tables in key order.
    pub fn to_json(&self) -> Result<String, EncodeError> {
        let hash = self.hash()?;
        let doc = serde_json::json!({
            "format": "keel-profile",
            "version": FORMAT_VERSION,
            "hash": hash,
            "profile": &self.profile,
            "blobs": &self.blobs,
        });
        // serde_json's map is ordered by key, so a round trip through Value sorts every object.
        let value: serde_json::Value =
            serde_json::to_value(doc).map_err(|e| EncodeError::Cbor(e.to_string()))?;
        serde_json::to_string_pretty(&value).map_err(|e| EncodeError::Cbor(e.to_string()))
    }

    fn from_json(data: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct Doc {
            format: String,
            version: u16,
            hash: Hash,
            profile: Profile,
            #[serde(default)]
            blobs: BTreeMap<Hash, Blob>,
        }
        let doc: Doc =
            serde_json::from_slice(data).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if doc.format != "keel-profile" {
            return Err(DecodeError::NotAProfile);
        }
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&doc.version) {
            return Err(DecodeError::UnsupportedVersion(doc.version));
        }
        let found =
            profile_hash(&doc.profile).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if found != doc.hash {
            return Err(DecodeError::HashMismatch {
                expected: doc.hash,
                found,
            });
        }
        let file = ProfileFile {
            profile: doc.profile,
            blobs: doc.blobs,
            signature: None,
        };
        file.check_blobs()?;
        Ok(file)
    }

    fn check_blobs(&self) -> Result<(), DecodeError> {
        for (h, b) in &self.blobs {
            if Hash::of(&b.0) != *h {
                return Err(DecodeError::BlobMismatch(*h));
            }
        }
        Ok(())
    }
}

fn decode_v1(data: &[u8]) -> Result<ProfileFile, DecodeError> {
    if data[10] != COMPRESSION_ZSTD {
        return Err(DecodeError::UnsupportedCodec {
            what: "compression",
            code: data[10],
        });
    }
    if data[11] != ENCODING_CBOR {
        return Err(DecodeError::UnsupportedCodec {
            what: "encoding",
            code: data[11],
        });
    }
    let expected = Hash(data[12..44].try_into().expect("32 bytes"));
    let dec = zstd::stream::Decoder::new(&data[HEADER_LEN..])
        .map_err(|e| DecodeError::Decompress(e.to_string()))?;
    let mut cbor = Vec::new();
    dec.take(MAX_PAYLOAD + 1)
        .read_to_end(&mut cbor)
        .map_err(|e| DecodeError::Decompress(e.to_string()))?;
    if cbor.len() as u64 > MAX_PAYLOAD {
        return Err(DecodeError::TooLarge);
    }
    let payload: PayloadV1 =
        ciborium::from_reader(&cbor[..]).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let found = Hash::of(&payload.profile);
    if found != expected {
        return Err(DecodeError::HashMismatch { expected, found });
    }
    let profile: Profile = ciborium::from_reader(&payload.profile[..])
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let file = ProfileFile {
        profile,
        blobs: payload.blobs,
        signature: payload.signature.map(|b| b.0),
    };
    file.check_blobs()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip() {
        let mut f = ProfileFile::default();
        f.add_blob(b"hello".to_vec());
        f.add_blob(vec![7u8; 100_000]);
        let back = ProfileFile::decode(&f.encode().unwrap()).unwrap();
        assert_eq!(back, f);
    }
}

#[cfg(test)]
mod tests2 {
    use super::*;
    use crate::model::*;

    #[test]
    fn hashes_in_profile() {
        let mut f = ProfileFile::default();
        f.profile.files.files.push(File {
            hash: Some(Hash::of(b"x")),
            ..File::default()
        });
        let back = ProfileFile::decode(&f.encode().unwrap()).unwrap();
        assert_eq!(back, f);
        let mut f = ProfileFile::default();
        f.profile.packages.repository_keys.push(RepositoryKey {
            hash: Hash::of(b"x"),
            ..Default::default()
        });
        let back = ProfileFile::decode(&f.encode().unwrap()).unwrap();
        assert_eq!(back, f);
    }
}
