//! Integration tests of the system tree: a real Debian server is captured, rebuilt from its
//! profile and verified against it.

mod support;
mod tree;
