//! NextEngine (ネクストエンジン): its stock callback (在庫連携, [`stock_callback`]) and the API
//! client that keeps each account's tokens alive ([`client`]).
//! Goods and stock uploads from the spool come next.

pub mod client;
pub mod stock_callback;
pub mod upload;
