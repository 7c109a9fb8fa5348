//! Where a batch goes: ClickHouse ([`migrations`], [`stored`] offsets), the
//! result records ([`results`]), and the Kafka transaction that delivers
//! them together ([`delivery`], [`dispatch`]).

pub mod delivery;
pub(crate) mod dispatch;
pub mod migrations;
pub mod results;
pub mod stored;
