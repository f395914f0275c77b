//! The five MIG 4.1 messages as typed values. How they are built from raw fields is in
//! [`super::build`]; rules that relate several fields live in [`super::rules`].

use rust_decimal::Decimal;
use serde::Serialize;

use super::types::*;

/// One thing wrong with one field of one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// CSV line number, or the message's position in a JSON batch (1-based); 0 for the file.
    pub row: usize,
    pub field: String,
    pub value: String,
    pub reason: String,
    /// Set when the problem is one the platform finds after Turnkey has taken the file (the
    /// official XSD and Turnkey's program check accept it); `None` for the rules Turnkey
    /// itself applies and for the daemon's own limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<PlatformRule>,
}

/// The rules the e-invoice platform applies that neither the official XSD nor Turnkey's
/// program check does: a file breaking one of them is taken by Turnkey and refused later,
/// by the platform's ProcessResult. Each names its source in [`PlatformRule::source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlatformRule {
    /// 統一編號: eight digits, not all zeros, with valid check digits (Ministry of Finance,
    /// the 2023-04-01 rule). Turnkey checks only that an F0401 buyer's id is digits.
    Ban,
    /// Amounts add up: lines to buckets, buckets and tax to the total, tax to sales × rate;
    /// no sales bucket is negative.
    Totals,
    /// InvoiceType 07 (general tax) takes TaxType 1, 2, 3 or 9; 08 (special tax) takes
    /// 2, 3, 4 or 9; each TaxType its rates; a line (also an allowance line) is never 9.
    InvoiceTypeTaxType,
    /// A consumer (B2C) invoice states tax-inclusive amounts with TaxAmount 0.
    ConsumerTaxInclusive,
    /// Carriers and donations: type and both ids together, the mobile barcode's shape
    /// (3J0002), a business buyer uses no other carrier and is never donated to, NPOBAN is
    /// 3 to 7 digits.
    Carrier,
    /// Line sequence numbers are unique within a message.
    UniqueSequence,
    /// Dates that exist (the XSD takes 20240231) and times within the day (it takes
    /// 24:00:00), in order (a cancel or void not before the invoice; an allowance line's
    /// invoice not after the allowance).
    Dates,
    /// An allowance's lines take back amounts and tax above 0.
    PositiveAllowance,
    /// All allowances on an invoice together stay within its untaxed total.
    AllowanceWithinInvoice,
    /// An invoice's documents come in the order the MIG allows: a cancel, void or allowance
    /// follows an issue that stands; a cancelled number is never issued again, a voided one
    /// may be; an allowance cancel follows an allowance (see [`super::sequence`]).
    Sequence,
    /// A cancel (F0501) is possible until the invoice's period's filing deadline; after it,
    /// an allowance (see [`super::deadline::check_cancel`]).
    CancelPeriod,
}

impl PlatformRule {
    /// The rule's name, as reports spell it (`ban`, `totals`, …).
    pub fn name(self) -> &'static str {
        match self {
            PlatformRule::Ban => "ban",
            PlatformRule::Totals => "totals",
            PlatformRule::InvoiceTypeTaxType => "invoice-type-tax-type",
            PlatformRule::ConsumerTaxInclusive => "consumer-tax-inclusive",
            PlatformRule::Carrier => "carrier",
            PlatformRule::UniqueSequence => "unique-sequence",
            PlatformRule::Dates => "dates",
            PlatformRule::PositiveAllowance => "positive-allowance",
            PlatformRule::AllowanceWithinInvoice => "allowance-within-invoice",
            PlatformRule::Sequence => "sequence",
            PlatformRule::CancelPeriod => "cancel-period",
        }
    }

    /// Where the rule comes from, for reports and the README.
    pub fn source(self) -> &'static str {
        match self {
            PlatformRule::Ban => "MOF 統一編號 format and check-digit rule (2023-04-01)",
            PlatformRule::Totals => "MIG 4.1 Amount field notes (sums and SalesAmount × TaxRate)",
            PlatformRule::InvoiceTypeTaxType => "MIG 4.1 InvoiceType and TaxType code notes",
            PlatformRule::ConsumerTaxInclusive => {
                "MIG 4.1 TaxAmount note; every official B2C sample (TaxAmount 0)"
            }
            PlatformRule::Carrier => {
                "MIG 4.1 CarrierType / DonateMark / NPOBAN notes; MOF carrier specification (手機條碼 /XXXXXXX)"
            }
            PlatformRule::UniqueSequence => "MIG 4.1 SequenceNumber note",
            PlatformRule::Dates => {
                "the calendar; MIG 4.1 CancelDate / VoidDate / OriginalInvoiceDate notes"
            }
            PlatformRule::PositiveAllowance => "MIG 4.1 G0401 Amount notes",
            PlatformRule::AllowanceWithinInvoice => "MIG 4.1 G0401 notes (折讓 of a sold amount)",
            PlatformRule::Sequence => {
                "MIG 4.1 F0501 / F0701 / G0401 / G0501 notes: 作廢 and 註銷 of an issued invoice, 註銷後重開 (re-issue after a void), 折讓 and its 作廢"
            }
            PlatformRule::CancelPeriod => {
                "加值型及非加值型營業稅法 §35 (the period's filing deadline); 統一發票使用辦法 §20 (an allowance after it)"
            }
        }
    }
}

/// Seller or buyer (MIG RoleDescription).
#[derive(Debug, Clone, PartialEq)]
pub struct Role<Id> {
    pub identifier: Id,
    pub name: String,
    pub address: Option<String>,
    pub person_in_charge: Option<String>,
    pub telephone_number: Option<String>,
    pub facsimile_number: Option<String>,
    pub email_address: Option<String>,
    pub customer_number: Option<String>,
    pub role_remark: Option<String>,
}

/// Carrier (載具): type and both ids always travel together.
#[derive(Debug, Clone, PartialEq)]
pub struct Carrier {
    pub carrier_type: String,
    pub id1: String,
    pub id2: String,
}

/// F0401 `<Invoice>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Invoice {
    pub number: InvoiceNumber,
    pub date: MigDate,
    pub time: MigTime,
    pub seller: Role<Ban>,
    pub buyer: Role<BuyerId>,
    pub buyer_remark: Option<String>,
    pub main_remark: Option<String>,
    pub customs_clearance_mark: Option<String>,
    pub category: Option<String>,
    pub relate_number: Option<String>,
    pub invoice_type: String,
    pub group_mark: Option<String>,
    pub donate: bool,
    pub carrier: Option<Carrier>,
    pub print: bool,
    pub npoban: Option<String>,
    pub random_number: Option<RandomNumber>,
    pub bonded_area_confirm: Option<String>,
    pub zero_tax_rate_reason: Option<String>,
    pub reserved1: Option<String>,
    pub reserved2: Option<String>,
    pub items: Vec<InvoiceItem>,
    pub amount: InvoiceAmount,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceItem {
    pub row: usize,
    pub description: String,
    pub quantity: Decimal,
    pub unit: Option<String>,
    pub unit_price: Decimal,
    pub tax_type: TaxType,
    pub amount: Decimal,
    pub sequence_number: String,
    pub remark: Option<String>,
    pub relate_number: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceAmount {
    pub sales: Decimal,
    pub free_tax_sales: Decimal,
    pub zero_tax_sales: Decimal,
    pub tax_type: TaxType,
    pub tax_rate: Decimal,
    pub tax_amount: Decimal,
    pub total: Decimal,
    pub discount: Option<Decimal>,
    pub original_currency_amount: Option<Decimal>,
    pub exchange_rate: Option<Decimal>,
    pub currency: Option<String>,
}

/// F0501 `<CancelInvoice>` (flat).
#[derive(Debug, Clone, PartialEq)]
pub struct CancelInvoice {
    pub number: InvoiceNumber,
    pub invoice_date: MigDate,
    pub buyer_id: BuyerId,
    pub seller_id: Ban,
    pub cancel_date: MigDate,
    pub cancel_time: MigTime,
    pub reason: String,
    pub return_tax_document_number: Option<String>,
    pub remark: Option<String>,
    pub reserved1: Option<String>,
    pub reserved2: Option<String>,
}

/// F0701 `<VoidInvoice>` (flat).
#[derive(Debug, Clone, PartialEq)]
pub struct VoidInvoice {
    pub number: InvoiceNumber,
    pub invoice_date: MigDate,
    pub buyer_id: BuyerId,
    pub seller_id: Ban,
    pub void_date: MigDate,
    pub void_time: MigTime,
    pub reason: String,
    pub remark: Option<String>,
    pub reserved1: Option<String>,
    pub reserved2: Option<String>,
}

/// G0401 `<Allowance>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowance {
    pub number: String,
    pub date: MigDate,
    pub seller: Role<Ban>,
    pub buyer: Role<BuyerId>,
    /// Always `2` (issued by the seller): MIG 4.1 fixes it for G0401.
    pub allowance_type: String,
    pub original_seller_id: Option<Ban>,
    pub original_buyer_id: Option<Ban>,
    pub items: Vec<AllowanceItem>,
    pub tax_amount: Decimal,
    pub total_amount: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AllowanceItem {
    pub row: usize,
    pub original_invoice_date: MigDate,
    pub original_invoice_number: InvoiceNumber,
    pub original_sequence_number: Option<String>,
    pub original_description: String,
    pub quantity: Decimal,
    pub unit: Option<String>,
    pub unit_price: Decimal,
    pub amount: Decimal,
    pub tax: Decimal,
    pub allowance_sequence_number: String,
    pub tax_type: TaxType,
}

/// G0501 `<CancelAllowance>` (flat).
#[derive(Debug, Clone, PartialEq)]
pub struct CancelAllowance {
    pub number: String,
    /// The cancelled allowance's type: `1` (buyer-issued) or `2` (seller-issued); `2` when the
    /// input leaves it out, since MIG 4.1 lets a G0401 be nothing else.
    pub allowance_type: String,
    pub allowance_date: MigDate,
    pub buyer_id: BuyerId,
    pub seller_id: Ban,
    pub cancel_date: MigDate,
    pub cancel_time: MigTime,
    pub reason: String,
    pub remark: Option<String>,
}

/// Any of the five messages. Variants differ in size; a batch holds at most 999, so boxing
/// would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Invoice(Invoice),
    Cancel(CancelInvoice),
    Void(VoidInvoice),
    Allowance(Allowance),
    CancelAllowance(CancelAllowance),
}

impl Message {
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Invoice(_) => MessageType::F0401,
            Message::Cancel(_) => MessageType::F0501,
            Message::Void(_) => MessageType::F0701,
            Message::Allowance(_) => MessageType::G0401,
            Message::CancelAllowance(_) => MessageType::G0501,
        }
    }

    /// The document number the message is about (invoice or allowance number).
    pub fn number(&self) -> &str {
        match self {
            Message::Invoice(m) => m.number.as_str(),
            Message::Cancel(m) => m.number.as_str(),
            Message::Void(m) => m.number.as_str(),
            Message::Allowance(m) => &m.number,
            Message::CancelAllowance(m) => &m.number,
        }
    }

    pub fn seller(&self) -> &Ban {
        match self {
            Message::Invoice(m) => &m.seller.identifier,
            Message::Cancel(m) => &m.seller_id,
            Message::Void(m) => &m.seller_id,
            Message::Allowance(m) => &m.seller.identifier,
            Message::CancelAllowance(m) => &m.seller_id,
        }
    }

    /// The date of the document the message is about (invoice or allowance date).
    pub fn document_date(&self) -> MigDate {
        match self {
            Message::Invoice(m) => m.date,
            Message::Cancel(m) => m.invoice_date,
            Message::Void(m) => m.invoice_date,
            Message::Allowance(m) => m.date,
            Message::CancelAllowance(m) => m.allowance_date,
        }
    }

    /// The buyer's id (`0000000000` for a consumer).
    pub fn buyer_id(&self) -> &str {
        match self {
            Message::Invoice(m) => m.buyer.identifier.as_str(),
            Message::Cancel(m) => m.buyer_id.as_str(),
            Message::Void(m) => m.buyer_id.as_str(),
            Message::Allowance(m) => m.buyer.identifier.as_str(),
            Message::CancelAllowance(m) => m.buyer_id.as_str(),
        }
    }

    /// The untaxed amount the store keeps: an invoice's sales, an allowance's total.
    pub fn untaxed_amount(&self) -> Option<Decimal> {
        match self {
            Message::Invoice(m) => m
                .amount
                .sales
                .checked_add(m.amount.free_tax_sales)?
                .checked_add(m.amount.zero_tax_sales),
            Message::Allowance(m) => Some(m.total_amount),
            _ => None,
        }
    }
}
