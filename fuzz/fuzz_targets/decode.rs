//! The profile decoder on arbitrary bytes: it must return, never panic, hang or abort. Whatever
//! it accepts must survive a round trip.
#![no_main]

use keel_profile::ProfileFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = ProfileFile::decode(data) {
        let bytes = file.encode().expect("a decoded profile encodes");
        let again = ProfileFile::decode(&bytes).expect("an encoded profile decodes");
        assert_eq!(again, file);
    }
});
