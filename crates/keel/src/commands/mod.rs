pub mod bench;
pub mod capture;
pub mod diff;
pub mod keygen;
pub mod show;
