//! keel-recover against real devices and real captures: planning from a captured image,
//! refusing disks in use, and planning speed.

mod captured;
mod safety;
mod speed;
mod support;
