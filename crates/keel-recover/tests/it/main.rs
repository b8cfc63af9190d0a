//! keel-recover against real devices and real captures: planning from a captured image,
//! applying plans onto image files and loop devices, refusing disks in use, and planning
//! speed.

mod apply;
mod captured;
mod refusals;
mod safety;
mod snapshots;
mod speed;
mod support;
