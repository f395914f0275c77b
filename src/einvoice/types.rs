//! Domain types of MIG 4.1 that validate on construction.
//!
//! Each type holds a value that is known to be well-formed, so the renderer and the store
//! never see a malformed invoice number, identifier, date or amount. The `parse` functions
//! return a short reason in plain words; the caller adds the file, row and field.

use std::fmt;

use chrono::{NaiveDate, NaiveTime};
use rust_decimal::Decimal;

/// The five MIG 4.1 messages turnbridge writes for Turnkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageType {
    /// Issue an invoice (開立發票), root `<Invoice>`.
    F0401,
    /// Cancel an invoice (作廢發票), root `<CancelInvoice>`.
    F0501,
    /// Void an invoice (註銷發票), root `<VoidInvoice>`.
    F0701,
    /// Allowance (折讓證明單), root `<Allowance>`.
    G0401,
    /// Cancel an allowance (作廢折讓證明單), root `<CancelAllowance>`.
    G0501,
}

impl MessageType {
    pub const ALL: [MessageType; 5] = [
        MessageType::F0401,
        MessageType::F0501,
        MessageType::F0701,
        MessageType::G0401,
        MessageType::G0501,
    ];

    /// Parses a 4.1 code, or a legacy MIG 3.x / 4.0 code that maps onto one.
    ///
    /// Returns the 4.1 type and, for a legacy code, the code as given (kept in the store).
    pub fn parse_with_legacy(code: &str) -> Result<(MessageType, Option<&'static str>), String> {
        let code = code.trim();
        let (ty, legacy) = match code {
            "F0401" => (MessageType::F0401, None),
            "F0501" => (MessageType::F0501, None),
            "F0701" => (MessageType::F0701, None),
            "G0401" => (MessageType::G0401, None),
            "G0501" => (MessageType::G0501, None),
            "A0401" => (MessageType::F0401, Some("A0401")),
            "C0401" => (MessageType::F0401, Some("C0401")),
            "A0501" => (MessageType::F0501, Some("A0501")),
            "C0501" => (MessageType::F0501, Some("C0501")),
            "C0701" => (MessageType::F0701, Some("C0701")),
            "B0401" => (MessageType::G0401, Some("B0401")),
            "D0401" => (MessageType::G0401, Some("D0401")),
            "B0501" => (MessageType::G0501, Some("B0501")),
            "D0501" => (MessageType::G0501, Some("D0501")),
            "" => return Err("is empty".into()),
            other => {
                return Err(format!(
                    "`{other}` is not a supported message type (F0401, F0501, F0701, G0401, G0501, or legacy A/B/C/D 0401/0501/0701)"
                ))
            }
        };
        Ok((ty, legacy))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::F0401 => "F0401",
            MessageType::F0501 => "F0501",
            MessageType::F0701 => "F0701",
            MessageType::G0401 => "G0401",
            MessageType::G0501 => "G0501",
        }
    }

    /// The root element of the message.
    pub fn root(self) -> &'static str {
        match self {
            MessageType::F0401 => "Invoice",
            MessageType::F0501 => "CancelInvoice",
            MessageType::F0701 => "VoidInvoice",
            MessageType::G0401 => "Allowance",
            MessageType::G0501 => "CancelAllowance",
        }
    }

    /// The default namespace of the message, `urn:GEINV:eInvoiceMessage:<MSG>:4.1`.
    pub fn namespace(self) -> String {
        format!("urn:GEINV:eInvoiceMessage:{}:4.1", self.as_str())
    }

    /// The element that carries the document number, used in reports and the store.
    pub fn number_field(self) -> &'static str {
        match self {
            MessageType::F0401 => "InvoiceNumber",
            MessageType::F0501 => "CancelInvoiceNumber",
            MessageType::F0701 => "VoidInvoiceNumber",
            MessageType::G0401 => "AllowanceNumber",
            MessageType::G0501 => "CancelAllowanceNumber",
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MessageType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match MessageType::parse_with_legacy(s)? {
            (ty, None) => Ok(ty),
            (_, Some(code)) => Err(format!("`{code}` is a legacy code")),
        }
    }
}

/// An invoice number: two capital letters (the track, 字軌) and eight digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InvoiceNumber(String);

impl InvoiceNumber {
    pub fn parse(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        let ok = b.len() == 10
            && b[..2].iter().all(u8::is_ascii_uppercase)
            && b[2..].iter().all(u8::is_ascii_digit);
        if ok {
            Ok(InvoiceNumber(s.to_string()))
        } else {
            Err("must be two capital letters and eight digits, like AB12345678".into())
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InvoiceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A business administration number (統一編號): eight digits with a valid checksum.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ban(String);

impl Ban {
    /// Checks the checksum under the rule in force since 2023-04-01: the weighted digit sum
    /// is divisible by 5; when the 7th digit is 7 its product (28 → 10) may count as 1 or 0.
    pub fn parse(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
            return Err("must be eight digits".into());
        }
        if b.iter().all(|&d| d == b'0') {
            // Turnkey takes an all-zero id for a consumer, never for a business.
            return Err("00000000 is no business id; a consumer buyer is 0000000000".into());
        }
        const WEIGHTS: [u32; 8] = [1, 2, 1, 2, 1, 2, 4, 1];
        let mut sum = 0;
        for (i, d) in b.iter().enumerate() {
            let p = u32::from(d - b'0') * WEIGHTS[i];
            sum += p / 10 + p % 10;
        }
        let valid = sum % 5 == 0 || (b[6] == b'7' && (sum + 1) % 5 == 0);
        if valid {
            Ok(Ban(s.to_string()))
        } else {
            Err("fails the 統一編號 checksum".into())
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ban {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The buyer of an invoice: a business (統一編號) or a consumer (ten zeros).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuyerId {
    Business(Ban),
    Consumer,
}

impl BuyerId {
    pub const CONSUMER: &'static str = "0000000000";

    pub fn parse(s: &str) -> Result<Self, String> {
        if s == Self::CONSUMER {
            Ok(BuyerId::Consumer)
        } else if s.len() == 10 {
            Err("a consumer buyer is ten zeros, 0000000000".into())
        } else {
            Ban::parse(s)
                .map(BuyerId::Business)
                .map_err(|e| format!("{e} (a consumer buyer is 0000000000)"))
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            BuyerId::Business(ban) => ban.as_str(),
            BuyerId::Consumer => Self::CONSUMER,
        }
    }
    pub fn is_consumer(&self) -> bool {
        matches!(self, BuyerId::Consumer)
    }
}

/// A Gregorian date written `YYYYMMDD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MigDate(pub NaiveDate);

impl MigDate {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must be a date written YYYYMMDD".into());
        }
        NaiveDate::parse_from_str(s, "%Y%m%d")
            .map(MigDate)
            .map_err(|_| Self::CALENDAR_ERROR.into())
    }

    const CALENDAR_ERROR: &'static str = "is not a calendar date";

    /// Whether a [`MigDate::parse`] error is about a day that does not exist.
    pub fn is_calendar_error(reason: &str) -> bool {
        reason == Self::CALENDAR_ERROR
    }
}

impl fmt::Display for MigDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y%m%d"))
    }
}

/// A time of day written `HH:MM:SS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigTime(pub NaiveTime);

impl MigTime {
    pub fn parse(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        let shape = b.len() == 8
            && b[2] == b':'
            && b[5] == b':'
            && [0, 1, 3, 4, 6, 7].iter().all(|&i| b[i].is_ascii_digit());
        if !shape {
            return Err("must be a time written HH:MM:SS".into());
        }
        NaiveTime::parse_from_str(s, "%H:%M:%S")
            .map(MigTime)
            .map_err(|_| "is not a time of day".into())
    }
}

impl fmt::Display for MigTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%H:%M:%S"))
    }
}

/// The four-digit random number (隨機碼) printed on the invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomNumber(String);

impl RandomNumber {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(RandomNumber(s.to_string()))
        } else {
            Err("must be exactly four digits".into())
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Tax type (課稅別) of an invoice, an item or an allowance line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaxType {
    /// 1: taxable (應稅).
    Taxable,
    /// 2: zero-rated (零稅率).
    ZeroRated,
    /// 3: tax-exempt (免稅).
    Exempt,
    /// 4: special rate (特種稅率).
    Special,
    /// 9: mixed (混合應稅與免稅或零稅率); invoice level only.
    Mixed,
}

impl TaxType {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "1" => Ok(TaxType::Taxable),
            "2" => Ok(TaxType::ZeroRated),
            "3" => Ok(TaxType::Exempt),
            "4" => Ok(TaxType::Special),
            "9" => Ok(TaxType::Mixed),
            _ => Err(
                "must be 1 (taxable), 2 (zero-rated), 3 (exempt), 4 (special) or 9 (mixed)".into(),
            ),
        }
    }
    pub fn code(self) -> &'static str {
        match self {
            TaxType::Taxable => "1",
            TaxType::ZeroRated => "2",
            TaxType::Exempt => "3",
            TaxType::Special => "4",
            TaxType::Mixed => "9",
        }
    }
}

/// Parses a non-negative decimal as MIG writes it: at most 20 digits, `frac` after the point.
pub fn parse_amount(s: &str, frac: u32) -> Result<Decimal, String> {
    let d = parse_signed_amount(s, frac)?;
    if d.is_sign_negative() && !d.is_zero() {
        return Err("must not be negative".into());
    }
    Ok(d)
}

/// Parses a decimal that may be negative (a product line's quantity, price and amount, which
/// the XSD leaves unbounded: discount lines), otherwise as [`parse_amount`].
pub fn parse_signed_amount(s: &str, frac: u32) -> Result<Decimal, String> {
    let t = s.trim();
    let shape_ok = !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        && t.bytes().filter(|&b| b == b'.').count() <= 1;
    if !shape_ok {
        return Err("must be a plain decimal number like 1050 or 12.5".into());
    }
    let d: Decimal = t
        .parse()
        .map_err(|_| "must be a plain decimal number like 1050 or 12.5".to_string())?;
    if t.bytes().skip(1).any(|b| b == b'-') {
        return Err("must be a plain decimal number like 1050 or 12.5".into());
    }
    let d = d.normalize();
    if d.scale() > frac {
        return Err(if frac == 0 {
            "must be a whole number".into()
        } else {
            format!("has more than {frac} digits after the decimal point")
        });
    }
    let int_digits = d.trunc().to_string().trim_start_matches('0').len() as u32;
    if int_digits + d.scale() > 20 {
        return Err("has more than 20 digits".into());
    }
    Ok(d)
}

/// The currency codes MIG 4.1 allows in `Currency` (the official `CurrencyCodeEnum`; ISO 4217
/// as the MOF froze it, so some retired codes are in and some newer ones are not).
pub const CURRENCY_CODES: [&str; 170] = [
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYR", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CYP", "CZK", "DJF", "DKK", "DOP",
    "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GGP", "GHS", "GIP", "GMD",
    "GNF", "GTQ", "GYD", "HKD", "HNL", "HRK", "HTG", "HUF", "IDR", "ILS", "IMP", "INR", "IQD",
    "IRR", "ISK", "JEP", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD",
    "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LTL", "LVL", "LYD", "MAD", "MDL", "MGA",
    "MKD", "MMK", "MNT", "MOP", "MRO", "MTL", "MUR", "MVR", "MWK", "MXN", "MYR", "MZN", "NAD",
    "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG",
    "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLL",
    "SOS", "SPL", "SRD", "STD", "SVC", "SYP", "SZL", "THB", "TJS", "TMM", "TND", "TOP", "TRY",
    "TTD", "TVD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VEB", "VEF", "VND", "VUV",
    "WST", "XAF", "XAG", "XAU", "XCD", "XDR", "XOF", "XPD", "XPF", "XPT", "YER", "ZAR", "ZMK",
    "ZWD",
];

/// Writes a decimal without trailing zeros (`50.00` → `50`), as MIG examples do.
pub fn format_amount(d: &Decimal) -> String {
    let n = d.normalize();
    if n.is_zero() {
        "0".into()
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_checksum_follows_the_2023_rule() {
        for ok in ["28080623", "10458575", "04595257", "24634102"] {
            assert!(Ban::parse(ok).is_ok(), "{ok} should be valid");
        }
        for bad in ["28080624", "1234567", "2808062a", "12345678", "00000000"] {
            assert!(Ban::parse(bad).is_err(), "{bad} should be invalid");
        }
    }

    #[test]
    fn consumer_buyer_skips_the_checksum() {
        assert_eq!(BuyerId::parse("0000000000"), Ok(BuyerId::Consumer));
        assert!(BuyerId::parse("0000000001").is_err());
        assert!(matches!(
            BuyerId::parse("28080623"),
            Ok(BuyerId::Business(_))
        ));
    }

    #[test]
    fn invoice_number_shape() {
        assert!(InvoiceNumber::parse("AB12345678").is_ok());
        for bad in [
            "ab12345678",
            "AB1234567",
            "A112345678",
            "AB123456789",
            "AB1234567X",
        ] {
            assert!(InvoiceNumber::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(MigDate::parse("20261126").unwrap().to_string(), "20261126");
        assert!(MigDate::parse("20260230").is_err());
        assert!(MigDate::parse("2026-11-26").is_err());
        assert_eq!(MigTime::parse("09:05:00").unwrap().to_string(), "09:05:00");
        assert!(MigTime::parse("090500").is_err());
        assert!(MigTime::parse("25:00:00").is_err());
    }

    #[test]
    fn random_number_is_four_digits() {
        assert!(RandomNumber::parse("0000").is_ok());
        assert!(RandomNumber::parse("10000").is_err());
        assert!(RandomNumber::parse("12a4").is_err());
    }

    #[test]
    fn amounts_keep_precision_and_reject_bad_shapes() {
        assert_eq!(format_amount(&parse_amount("50.00", 7).unwrap()), "50");
        assert_eq!(
            format_amount(&parse_amount("0.1234567", 7).unwrap()),
            "0.1234567"
        );
        assert!(parse_amount("0.12345678", 7).is_err());
        assert!(parse_amount("12.5", 0).is_err());
        assert!(parse_amount("-1", 7).is_err());
        assert!(parse_amount("1e3", 7).is_err());
        assert!(parse_amount("", 7).is_err());
    }

    #[test]
    fn legacy_codes_map_to_f_and_g() {
        let cases = [
            ("A0401", "F0401"),
            ("C0401", "F0401"),
            ("A0501", "F0501"),
            ("C0501", "F0501"),
            ("C0701", "F0701"),
            ("B0401", "G0401"),
            ("D0401", "G0401"),
            ("B0501", "G0501"),
            ("D0501", "G0501"),
        ];
        for (old, new) in cases {
            let (ty, legacy) = MessageType::parse_with_legacy(old).unwrap();
            assert_eq!(ty.as_str(), new);
            assert_eq!(legacy, Some(old));
        }
        assert!(MessageType::parse_with_legacy("E0401").is_err());
    }
}
