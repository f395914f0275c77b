//! The label sets of turnbridge's metrics, and their values as types.
//!
//! Every label value is one of a closed set (a route, an outcome, a reason, a state) or a
//! message type or delivery state read from the store's own columns, never raw input, so a
//! series' cardinality is bounded by the code.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use crate::listener::Close;
use crate::store::feedback::FeedbackKind;
use crate::store::{JobState, MessageState};
use crate::webhook::inbound::EVENT_TYPES;

/// A closed set of label values, each spelled once. Hand-written because the crate's derive
/// writes a variant's Rust name (`CompanyWebhook`), and the exported values are snake_case.
macro_rules! label_values {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value exported.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        encode_as_str!($name);
    };
}

/// Exports a type that has `as_str` as that text.
macro_rules! encode_as_str {
    ($($name:ty),+) => {$(
        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    )+};
}

encode_as_str!(Close, FeedbackKind, JobState, MessageState);

label_values! {
    /// An HTTP route group (never the raw path, which anyone can vary).
    pub enum Route {
        Updatestock = "updatestock",
        CompanyWebhook = "company_webhook",
        Monitoring = "monitoring",
        Admin = "admin",
        Healthz = "healthz",
        Metrics = "metrics",
        Other = "other",
    }
}

label_values! {
    /// Which listener holds a connection.
    pub enum Listener {
        Main = "main",
        Monitor = "monitor",
    }
}

label_values! {
    /// What became of a NextEngine stock callback.
    pub enum StockOutcome {
        /// NextEngine's connection check (接続を確認), answered without a signature.
        ConnectionCheck = "connection_check",
        Accepted = "accepted",
        /// Refused: a missing or wrong signature, or a bad or stale request.
        Refused = "refused",
        /// Refused: this timestamp and signature were used before.
        Replayed = "replayed",
        /// Could not be recorded.
        Error = "error",
    }
}

label_values! {
    /// What became of a company-system webhook push.
    pub enum CompanyOutcome {
        Stored = "stored",
        Duplicate = "duplicate",
        /// Missing or wrong secret.
        Unauthorized = "unauthorized",
        TooLarge = "too_large",
        Malformed = "malformed",
        /// Well-formed JSON that breaks a rule of its event type.
        Invalid = "invalid",
    }
}

/// A company-system event type: one of [`EVENT_TYPES`], or `unknown` for anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CompanyEventType(Option<&'static str>);

impl CompanyEventType {
    /// A push whose type is not known (or not read yet).
    pub const UNKNOWN: CompanyEventType = CompanyEventType(None);

    /// The type named `ty`, or [`Self::UNKNOWN`].
    pub fn of(ty: &str) -> CompanyEventType {
        CompanyEventType(EVENT_TYPES.iter().copied().find(|t| *t == ty))
    }

    pub fn as_str(self) -> &'static str {
        self.0.unwrap_or("unknown")
    }
}

encode_as_str!(CompanyEventType);

label_values! {
    /// The kind of a spool file.
    pub enum SpoolKind {
        Einvoice = "einvoice",
    }
}

/// What became of a spool file: the state its job ended in, or left in place for a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpoolOutcome {
    Job(JobState),
    Retry,
}

impl EncodeLabelValue for SpoolOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        match self {
            SpoolOutcome::Job(state) => state.encode(encoder),
            SpoolOutcome::Retry => encoder.write_str("retry"),
        }
    }
}

label_values! {
    /// What a NextEngine API call answered.
    pub enum NeResult {
        Success = "success",
        Error = "error",
        Redirect = "redirect",
        /// Any other `result`.
        Other = "other",
        /// No answer: the call failed before one came.
        Unreachable = "unreachable",
    }
}

impl NeResult {
    /// The label of an answer whose `result` field is `result`.
    pub fn of_answer(result: &str) -> NeResult {
        match result {
            "success" => NeResult::Success,
            "error" => NeResult::Error,
            "redirect" => NeResult::Redirect,
            _ => NeResult::Other,
        }
    }
}

label_values! {
    /// What one outbound webhook attempt came to.
    pub enum AttemptOutcome {
        /// A 2xx answer.
        Success = "success",
        /// Any other answer.
        Failure = "failure",
        /// No answer (timeout, refused connection, ...).
        Error = "error",
        /// 410 Gone: the endpoint is disabled.
        Gone = "gone",
    }
}

/// `{route, status}` of an answered HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: Route,
    pub status: u16,
}

/// `{route}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Route,
}

/// `{listener}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: Listener,
}

/// `{reason}` a connection was closed or refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CloseLabels {
    pub reason: Close,
}

/// `{outcome}` of a stock callback.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StockLabels {
    pub outcome: StockOutcome,
}

/// `{type, outcome}` of a company webhook push.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CompanyLabels {
    pub r#type: CompanyEventType,
    pub outcome: CompanyOutcome,
}

/// `{kind, outcome}` of a spool file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SpoolLabels {
    pub kind: SpoolKind,
    pub outcome: SpoolOutcome,
}

/// `{kind}` of a file read from Turnkey's folders, as its record in the store names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FeedbackLabels {
    pub kind: FeedbackKind,
}

/// `{path, result}` of a NextEngine API call; the path is one the code names, never input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct NeCallLabels {
    pub path: &'static str,
    pub result: NeResult,
}

/// `{outcome}` of an outbound webhook attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AttemptLabels {
    pub outcome: AttemptOutcome,
}

/// `{message_type, state}` of e-invoice messages in the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MessageLabels {
    pub message_type: String,
    pub state: MessageState,
}

/// `{state}` of outbound webhook deliveries in the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub state: String,
}
