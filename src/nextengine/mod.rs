//! NextEngine (ネクストエンジン): its stock callback (在庫連携, [`stock_callback`]) and the API
//! client that keeps each account's tokens alive ([`client`]).
//! Goods and stock files from the spool become uploads ([`upload`], [`jobs`]).

pub mod client;
pub mod jobs;
pub mod stock_callback;
pub mod upload;
