//! Everything about the Turnkey gateway: handing it XML ([`pickup`]), reading what it and the
//! platform say back ([`results`]), following each message through its folders and results
//! ([`feedback`]; the real Turnkey's folders ([`layout`]), packs ([`pack`]) and log
//! ([`tklog`]) in the `turnkey` layout), and a stand-in that behaves like it for the sandbox
//! ([`simulator`]).

mod apply;
pub mod feedback;
mod files;
mod gateway;
pub mod layout;
pub mod pack;
pub mod pickup;
mod plausible;
pub mod results;
pub mod simulator;
pub mod tklog;
mod unparsed;

pub use pickup::{file_name, InboxTemplate, Pickup, PickupError};
