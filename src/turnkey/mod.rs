//! Everything about the Turnkey gateway: handing it XML ([`pickup`]), reading what it and the
//! platform say back ([`results`]), following each message through its folders and results
//! ([`feedback`]), and a stand-in that behaves like it for the sandbox ([`simulator`]).

pub mod feedback;
pub mod pickup;
pub mod results;
pub mod simulator;

pub use pickup::{file_name, InboxTemplate, Pickup, PickupError};
