//! The shape every reader produces: one message as named text fields, before validation.
//!
//! CSV and JSON both end here, so building and validating a message is written once.
//! Field keys are the CSV column names: MIG element names, with `Seller.` / `Buyer.` for the
//! two roles and `Item.` for product lines (for example `Seller.Identifier`, `Item.Quantity`).

use std::collections::BTreeMap;

/// One field value and where it came from, for the error report.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub value: String,
    /// CSV line number, or the 1-based position of the message in a JSON batch.
    pub row: usize,
    /// The name as the input spelled it: a CSV column or a JSON path.
    pub display: String,
}

/// A product line (or allowance line) of a message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawItem {
    pub row: usize,
    /// Prefix for fields that are missing, e.g. `Item.` or `Details.ProductItem[2].`.
    pub display_prefix: String,
    pub fields: BTreeMap<String, Cell>,
}

/// One message as read from a batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawMessage {
    /// First row of the message: a CSV line, or the message's position in a JSON batch.
    pub row: usize,
    /// Header fields (everything outside the product lines), keyed without the `Item.` prefix.
    pub fields: BTreeMap<String, Cell>,
    pub items: Vec<RawItem>,
    /// Display prefix for missing header fields (empty for CSV, a JSON path otherwise).
    pub display_prefix: String,
    /// A JSON message written in groups (`Main`, `Amount`), where a missing field would be.
    pub grouped: bool,
}

/// The header fields that live in a message's `Amount` group (F0401; G0401 uses two of them).
const AMOUNT_FIELDS: [&str; 11] = [
    "SalesAmount",
    "FreeTaxSalesAmount",
    "ZeroTaxSalesAmount",
    "TaxType",
    "TaxRate",
    "TaxAmount",
    "TotalAmount",
    "DiscountAmount",
    "OriginalCurrencyAmount",
    "ExchangeRate",
    "Currency",
];

impl RawMessage {
    pub fn get(&self, key: &str) -> Option<&Cell> {
        self.fields.get(key).filter(|c| !c.value.is_empty())
    }

    /// Where a header field is, or would be, as the input spells it: the CSV column, or the
    /// JSON path (`Messages[3].Main.NPOBAN`, `Messages[3].Amount.TaxAmount`).
    pub fn display_of(&self, key: &str) -> String {
        if let Some(c) = self.fields.get(key) {
            return c.display.clone();
        }
        if !self.grouped {
            return format!("{}{key}", self.display_prefix);
        }
        let group = if AMOUNT_FIELDS.contains(&key) {
            "Amount"
        } else {
            "Main"
        };
        format!("{}{group}.{key}", self.display_prefix)
    }
}

/// The header fields every message type knows, in CSV column spelling. Used to refuse unknown
/// columns and keys, so a typo is reported rather than silently dropped.
pub fn known_header_field(key: &str) -> bool {
    const ROLE: [&str; 9] = [
        "Identifier",
        "Name",
        "Address",
        "PersonInCharge",
        "TelephoneNumber",
        "FacsimileNumber",
        "EmailAddress",
        "CustomerNumber",
        "RoleRemark",
    ];
    if let Some(rest) = key
        .strip_prefix("Seller.")
        .or_else(|| key.strip_prefix("Buyer."))
    {
        return ROLE.contains(&rest);
    }
    HEADER_FIELDS.contains(&key) || AMOUNT_FIELDS.contains(&key)
}

/// Item fields in CSV spelling without the `Item.` prefix.
pub fn known_item_field(key: &str) -> bool {
    ITEM_FIELDS.contains(&key)
}

/// Fields that are metadata of the batch row rather than MIG elements.
pub const META_FIELDS: [&str; 2] = ["MessageType", "TenantId"];

const HEADER_FIELDS: &[&str] = &[
    "MessageType",
    "TenantId",
    // F0401 Main
    "InvoiceNumber",
    "InvoiceDate",
    "InvoiceTime",
    "BuyerRemark",
    "MainRemark",
    "CustomsClearanceMark",
    "Category",
    "RelateNumber",
    "InvoiceType",
    "GroupMark",
    "DonateMark",
    "CarrierType",
    "CarrierId1",
    "CarrierId2",
    "PrintMark",
    "NPOBAN",
    "RandomNumber",
    "BondedAreaConfirm",
    "ZeroTaxRateReason",
    "Reserved1",
    "Reserved2",
    // F0501 / F0701 / G0501 (flat)
    "CancelInvoiceNumber",
    "VoidInvoiceNumber",
    "CancelAllowanceNumber",
    "BuyerId",
    "SellerId",
    "CancelDate",
    "CancelTime",
    "CancelReason",
    "VoidDate",
    "VoidTime",
    "VoidReason",
    "ReturnTaxDocumentNumber",
    "Remark",
    // G0401 Main
    "AllowanceNumber",
    "AllowanceDate",
    "AllowanceType",
    "OriginalInvoiceSellerId",
    "OriginalInvoiceBuyerId",
];

const ITEM_FIELDS: &[&str] = &[
    // F0401 ProductItem
    "Description",
    "Quantity",
    "Unit",
    "UnitPrice",
    "TaxType",
    "Amount",
    "SequenceNumber",
    "Remark",
    "RelateNumber",
    // G0401 ProductItem
    "OriginalInvoiceDate",
    "OriginalInvoiceNumber",
    "OriginalSequenceNumber",
    "OriginalDescription",
    "Tax",
    "AllowanceSequenceNumber",
];
