//! End-to-end tests of the `keel` binary: one test binary, one module per area.
//!
//! Tests that need a real Debian root build one with debootstrap on first use and cache it
//! (see `support`); without root or debootstrap they say why on stderr and pass.

mod admin;
mod capture;
mod crash;
mod diff;
mod errors;
mod fleet;
#[path = "../../../keel-notify/tests/it/http_server.rs"]
#[allow(dead_code)]
mod http_server;
mod install;
mod machines;
mod rollback;
mod secrets;
mod server;
#[path = "../../../keel-notify/tests/it/smtp_server.rs"]
#[allow(dead_code)]
mod smtp_server;
mod support;
#[path = "../../../keel-system/tests/it/support.rs"]
#[allow(dead_code)]
mod system_support;
mod ui;
