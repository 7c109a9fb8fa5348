//! The input side: which topics and partitions a processor reads, and whether a
//! batch is still being delivered when they move.

pub mod assignment;
pub mod in_flight;
pub mod topics;
