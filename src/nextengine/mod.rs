//! NextEngine (ネクストエンジン): for now, its stock callback (在庫連携, [`stock_callback`]).
//! The API client and token keeping come with uploads.

pub mod stock_callback;
