//! The company system's webhook: `POST /api/sync/company/webhook` with `X-Webhook-Secret`.
//!
//! Six event types, each with its object (the seed's integration guide):
//! `order.created` / `order.updated` / `phone_order.received` carry `order` (`orderNo`,
//! optional customer fields, `items` of `productName`, `quantity`, `unitPrice`,
//! `totalAmount`…); `customer.created` / `customer.updated` carry `customer` (`id`, `name`…);
//! `inventory.updated` carries `inventory` (`productId`, `quantity`…). Validation names the
//! field at fault. A stored event is keyed by type, business key and an MD5 of its content,
//! so the same push twice is stored once.

use md5::{Digest, Md5};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::einvoice::archive::hex;

pub const EVENT_TYPES: [&str; 6] = [
    "order.created",
    "order.updated",
    "customer.created",
    "customer.updated",
    "inventory.updated",
    "phone_order.received",
];

/// Compares a shared secret in constant time. Both sides are hashed first, so neither the
/// content nor the length of the secret shows in the timing.
pub fn secret_matches(configured: &str, received: &str) -> bool {
    use sha2::Digest;
    let a = sha2::Sha256::digest(configured.as_bytes());
    let b = sha2::Sha256::digest(received.as_bytes());
    !configured.is_empty() && bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// Why a payload is refused (HTTP 422), naming the field.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub code: &'static str,
    pub field: String,
    pub reason: String,
}

/// An accepted push, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub event_type: String,
    /// The business key: order number, customer id or product id.
    pub key: String,
    pub content_md5: String,
    pub payload: Value,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        code: "invalid_payload",
        field: field.into(),
        reason: reason.into(),
    }
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, Invalid> {
    match v.get(field) {
        Some(Value::Object(o)) => Ok(o),
        Some(_) => Err(invalid(field, "must be an object")),
        None => Err(invalid(field, "is required")),
    }
}

/// A required identifier: a non-empty string or a whole number.
fn id(o: &Map<String, Value>, parent: &str, field: &str) -> Result<String, Invalid> {
    let path = format!("{parent}.{field}");
    match o.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 128 => {
            Ok(s.trim().to_string())
        }
        Some(Value::String(_)) => Err(invalid(path, "must be 1 to 128 characters")),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        None | Some(Value::Null) => Err(invalid(path, "is required")),
        Some(_) => Err(invalid(path, "must be a string or a whole number")),
    }
}

fn opt_string(o: &Map<String, Value>, parent: &str, field: &str) -> Result<(), Invalid> {
    match o.get(field) {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(invalid(format!("{parent}.{field}"), "must be a string")),
    }
}

fn number(
    o: &Map<String, Value>,
    path: String,
    field: &str,
    required: bool,
    min: f64,
) -> Result<(), Invalid> {
    let path = format!("{path}.{field}");
    match o.get(field) {
        None | Some(Value::Null) if !required => Ok(()),
        None | Some(Value::Null) => Err(invalid(path, "is required")),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() && v >= min => Ok(()),
            _ => Err(invalid(path, format!("must be a number of at least {min}"))),
        },
        Some(_) => Err(invalid(path, "must be a number")),
    }
}

fn order(v: &Value, phone: bool) -> Result<String, Invalid> {
    let o = object(v, "order")?;
    let key = id(o, "order", "orderNo")?;
    for f in [
        "customerId",
        "customerName",
        "customerAddress",
        "deliveryDate",
        "status",
        "note",
    ] {
        opt_string(o, "order", f)?;
    }
    if phone {
        match o.get("customerPhone") {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            _ => {
                return Err(invalid(
                    "order.customerPhone",
                    "is required for a phone order",
                ))
            }
        }
    } else {
        opt_string(o, "order", "customerPhone")?;
    }
    number(o, "order".into(), "totalAmount", false, 0.0)?;
    match o.get("items") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, it) in items.iter().enumerate() {
                let path = format!("order.items[{i}]");
                let Value::Object(it) = it else {
                    return Err(invalid(path, "must be an object"));
                };
                match it.get("productName") {
                    Some(Value::String(s)) if !s.trim().is_empty() => {}
                    _ => return Err(invalid(format!("{path}.productName"), "is required")),
                }
                number(it, path.clone(), "quantity", true, 0.0)?;
                number(it, path, "unitPrice", false, 0.0)?;
            }
        }
        Some(_) => return Err(invalid("order.items", "must be an array")),
    }
    Ok(key)
}

/// Validates a push. The body must already be authenticated.
pub fn validate(body: &Value) -> Result<Accepted, Invalid> {
    let ty = match body.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(invalid("type", "must be a string")),
        None => return Err(invalid("type", "is required")),
    };
    let key = match ty {
        "order.created" | "order.updated" => order(body, false)?,
        "phone_order.received" => order(body, true)?,
        "customer.created" | "customer.updated" => {
            let c = object(body, "customer")?;
            let key = id(c, "customer", "id")?;
            match c.get("name") {
                Some(Value::String(s)) if !s.trim().is_empty() => {}
                _ => return Err(invalid("customer.name", "is required")),
            }
            for f in ["phone", "address", "paymentType", "note"] {
                opt_string(c, "customer", f)?;
            }
            key
        }
        "inventory.updated" => {
            let inv = object(body, "inventory")?;
            let key = id(inv, "inventory", "productId")?;
            number(inv, "inventory".into(), "quantity", true, f64::MIN)?;
            number(inv, "inventory".into(), "minStock", false, 0.0)?;
            key
        }
        other => {
            return Err(Invalid {
                code: "unknown_event_type",
                field: "type".into(),
                reason: format!("`{other}` is not one of {}", EVENT_TYPES.join(", ")),
            })
        }
    };
    // serde_json keeps key order as sent; the MD5 is over the value as re-serialized, so the
    // same content with different whitespace is the same event.
    let content_md5 = hex(&Md5::digest(body.to_string().as_bytes()));
    Ok(Accepted {
        event_type: ty.to_string(),
        key,
        content_md5,
        payload: body.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_seed_example_is_accepted() {
        let body = json!({"type":"order.created","order":{"orderNo":"TEST-001","customerId":"test-customer-001","customerName":"測試客戶","customerPhone":"0912345678","customerAddress":"測試地址","items":[{"productName":"瓦斯桶20公斤","quantity":1,"unitPrice":800}],"totalAmount":800,"status":"pending","note":"測試訂單"}});
        let a = validate(&body).unwrap();
        assert_eq!(a.key, "TEST-001");
    }

    #[test]
    fn problems_name_the_field() {
        let e = validate(&json!({"type":"order.created","order":{"orderNo":"1","items":[{"productName":"x","quantity":"two"}]}})).unwrap_err();
        assert_eq!(e.field, "order.items[0].quantity");
        let e = validate(&json!({"type":"customer.created","customer":{"id":7}})).unwrap_err();
        assert_eq!(e.field, "customer.name");
        let e = validate(&json!({"type":"refund.created"})).unwrap_err();
        assert_eq!(e.code, "unknown_event_type");
    }

    #[test]
    fn secrets_compare_without_panicking_on_length() {
        assert!(secret_matches("s3cret", "s3cret"));
        assert!(!secret_matches("s3cret", "s3cre"));
        assert!(!secret_matches("", ""));
    }
}
