//! Damaged and hostile input: `decode` returns an error and never panics, and no damage turns a
//! file into a different profile.

use std::sync::OnceLock;

use keel_profile::{ProfileFile, MAGIC};
use proptest::prelude::*;
use proptest::sample::Index;

use crate::gen::sample;

/// The sample profile and its two encodings.
fn encoded() -> &'static (ProfileFile, Vec<u8>, Vec<u8>) {
    static ENCODED: OnceLock<(ProfileFile, Vec<u8>, Vec<u8>)> = OnceLock::new();
    ENCODED.get_or_init(|| {
        let file = sample();
        let binary = file.encode().expect("encode");
        let json = file.to_json().expect("to_json").into_bytes();
        // The damage tests mean something only on a profile with some substance.
        assert!(
            file.blobs.len() >= 2 && binary.len() > 1000,
            "sample profile: {} blobs, {} bytes encoded, {} bytes of JSON",
            file.blobs.len(),
            binary.len(),
            json.len()
        );
        (file, binary, json)
    })
}

/// One edit to a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    /// Copies a run of bytes over another place: keeps the damage plausible-looking.
    Splice(Index, Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, 1 << bit)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        2 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..32))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<Index>(), any::<Index>(), 1usize..64).prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    if data.is_empty() {
        return;
    }
    match m {
        Mutation::Flip(i, bit) => {
            let at = i.index(data.len());
            data[at] ^= bit;
        }
        Mutation::Set(i, b) => {
            let at = i.index(data.len());
            data[at] = *b;
        }
        Mutation::Truncate(i) => data.truncate(i.index(data.len())),
        Mutation::Insert(i, bytes) => {
            let at = i.index(data.len() + 1);
            data.splice(at..at, bytes.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let at = i.index(data.len());
            let end = (at + n).min(data.len());
            data.drain(at..end);
        }
        Mutation::Splice(from, to, n) => {
            let a = from.index(data.len());
            let b = to.index(data.len());
            let n = (*n).min(data.len() - a).min(data.len() - b);
            let run = data[a..a + n].to_vec();
            data[b..b + n].copy_from_slice(&run);
        }
    }
}

/// Decoding must not panic; whatever it accepts must be the original profile (the damage hit
/// bytes that carry no information) or at least a profile that re-encodes and decodes to itself.
fn check(data: &[u8], original: &ProfileFile) -> Result<(), TestCaseError> {
    if let Ok(decoded) = ProfileFile::decode(data) {
        prop_assert_eq!(
            &decoded.profile,
            &original.profile,
            "damaged input decoded to a different profile"
        );
        let again = ProfileFile::decode(&decoded.encode().expect("re-encode")).expect("re-decode");
        prop_assert_eq!(again, decoded);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_binary_profiles_never_panic(mutations in proptest::collection::vec(mutation(), 1..6)) {
        let (file, binary, _) = encoded();
        let mut data = binary.clone();
        for m in &mutations {
            apply(&mut data, m);
        }
        check(&data, file)?;
    }

    #[test]
    fn mutated_json_profiles_never_panic(mutations in proptest::collection::vec(mutation(), 1..6)) {
        let (file, _, json) = encoded();
        let mut data = json.clone();
        for m in &mutations {
            apply(&mut data, m);
        }
        check(&data, file)?;
    }

    #[test]
    fn one_damaged_byte_never_yields_another_profile(at in any::<Index>(), byte in 1u8..=255) {
        let (file, binary, _) = encoded();
        let mut data = binary.clone();
        let i = at.index(data.len());
        data[i] ^= byte;
        check(&data, file)?;
    }

    #[test]
    fn random_bytes_are_refused(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        prop_assert!(ProfileFile::decode(&data).is_err());
    }

    #[test]
    fn random_bytes_after_the_magic_are_refused(
        version in prop_oneof![Just(1u16), any::<u16>()],
        codecs in prop_oneof![Just([1u8, 1]), any::<[u8; 2]>()],
        rest in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&version.to_le_bytes());
        data.extend_from_slice(&codecs);
        data.extend_from_slice(&rest);
        prop_assert!(ProfileFile::decode(&data).is_err());
    }

    #[test]
    fn random_zstd_payloads_are_refused(rest in proptest::collection::vec(any::<u8>(), 0..2048)) {
        // A valid header and a well-formed zstd frame of garbage: the CBOR decoder sees it.
        let (_, binary, _) = encoded();
        let mut data = binary[..44].to_vec();
        data.extend(zstd::encode_all(&rest[..], 1).expect("zstd"));
        prop_assert!(ProfileFile::decode(&data).is_err());
    }
}

/// A header and a zstd frame around `cbor`.
fn frame(cbor: &[u8]) -> Vec<u8> {
    let (_, binary, _) = encoded();
    let mut data = binary[..44].to_vec();
    data.extend(zstd::encode_all(cbor, 1).expect("zstd"));
    data
}

#[test]
fn deeply_nested_input_is_refused_without_overflowing_the_stack() {
    // CBOR: 100 000 nested one-element arrays.
    let mut cbor = vec![0x81; 100_000];
    cbor.push(0x00);
    assert!(ProfileFile::decode(&frame(&cbor)).is_err());
    // JSON: the same nesting.
    let json = format!(
        "{{\"profile\":{}0{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(ProfileFile::decode(json.as_bytes()).is_err());
}

#[test]
fn huge_declared_lengths_are_refused_without_allocating_them() {
    // A map whose header claims 2^62 entries, a byte string claiming 2^62 bytes, and an array
    // claiming 2^62 items: none may be allocated up front.
    for head in [0xbb_u8, 0x5b, 0x9b] {
        let mut cbor = vec![head];
        cbor.extend_from_slice(&(1u64 << 62).to_be_bytes());
        cbor.extend_from_slice(&[0; 16]);
        assert!(ProfileFile::decode(&frame(&cbor)).is_err());
    }
}

#[test]
fn a_payload_that_expands_beyond_the_limit_is_refused() {
    // Zeros just past the limit compress to a few hundred kilobytes; decoding must stop there.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).expect("zstd");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..=keel_profile::MAX_PAYLOAD >> 20 {
        std::io::Write::write_all(&mut enc, &zeros).expect("compress");
    }
    let (_, binary, _) = encoded();
    let mut data = binary[..44].to_vec();
    data.extend(enc.finish().expect("zstd"));
    assert!(data.len() < 1 << 20, "the bomb is {} bytes", data.len());
    let err = ProfileFile::decode(&data).expect_err("a decompression bomb must be refused");
    assert!(err.to_string().contains("refusing"), "{err}");
}
