//! Integration tests of the profile format: one test binary, one module per concern.
//!
//! - `roundtrip`: any profile survives encode → decode, in binary and JSON, byte for byte.
//! - `corrupt`: damaged or hostile input makes `decode` return an error, never panic, and never
//!   yield a profile other than the one that was encoded.

mod corrupt;
mod gen;
mod roundtrip;
