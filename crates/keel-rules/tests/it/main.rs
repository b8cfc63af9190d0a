//! Integration tests of the rules engine: one test binary, one module per concern.
//!
//! - `builtin`: each rule of the built-in pack fires exactly for its case, with its message and
//!   item key, and stays quiet on unrelated changes, identical profiles and first profiles.
//! - `variables`: what rules see: `profile`, `previous`, `changes`, `added`/`removed`/`changed`,
//!   `host`, `item`, and how messages render values.
//! - `refused`: broken rules are refused with their name and the reason, at load, compile or
//!   check time.
//! - `limits`: costly rules are stopped by their deadline instead of hanging the server.
//! - `bench`: evaluation time of the built-in pack on a captured profile (ignored by default).

mod bench;
mod builtin;
mod limits;
mod refused;
mod support;
mod variables;
