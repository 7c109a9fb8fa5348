//! Per-device state ([`device`]), its changelog topic ([`changelog`]), and
//! the states of the owned partitions with their restore ([`store`]).

pub(crate) mod changelog;
pub mod device;
pub mod store;
