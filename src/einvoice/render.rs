//! MIG 4.1 XML for the five messages.
//!
//! Elements are written in the order of the official MIG 4.1 XSD. The official schemas declare
//! most groups as `xs:all`, so order does not matter to Turnkey, but a fixed order keeps the
//! output byte-for-byte reproducible (the golden files). The message's namespace is the
//! default namespace; text is escaped by quick-xml; optional elements with no value are left
//! out.

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;
use rust_decimal::Decimal;

use super::model::*;
use super::types::format_amount;

/// The largest file Turnkey takes: its gateway's file check (`ValidateFile.limitNumber = 20`)
/// refuses files over 20 MiB.
pub const MAX_XML_BYTES: usize = 20 << 20;

/// Renders a message as a UTF-8 XML document with a declaration and a final newline.
pub fn render(message: &Message) -> Vec<u8> {
    let mut x = Xml(Writer::new_with_indent(Vec::new(), b' ', 2));
    x.event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
    let ty = message.message_type();
    let ns = ty.namespace();
    let mut root = BytesStart::new(ty.root());
    root.push_attribute(("xmlns", ns.as_str()));
    x.event(Event::Start(root));
    match message {
        Message::Invoice(m) => invoice(&mut x, m),
        Message::Cancel(m) => cancel(&mut x, m),
        Message::Void(m) => void(&mut x, m),
        Message::Allowance(m) => allowance(&mut x, m),
        Message::CancelAllowance(m) => cancel_allowance(&mut x, m),
    }
    x.event(Event::End(BytesEnd::new(ty.root())));
    let mut out = x.0.into_inner();
    out.push(b'\n');
    out
}

struct Xml(Writer<Vec<u8>>);

impl Xml {
    fn event(&mut self, e: Event) {
        // Writing into a Vec cannot fail.
        self.0.write_event(e).expect("write to memory");
    }
    fn open(&mut self, name: &str) {
        self.event(Event::Start(BytesStart::new(name)));
    }
    fn close(&mut self, name: &str) {
        self.event(Event::End(BytesEnd::new(name)));
    }
    fn el(&mut self, name: &str, text: &str) {
        self.open(name);
        self.event(Event::Text(BytesText::new(text)));
        self.close(name);
    }
    fn opt(&mut self, name: &str, text: &Option<String>) {
        if let Some(t) = text {
            self.el(name, t);
        }
    }
    fn num(&mut self, name: &str, d: &Decimal) {
        self.el(name, &format_amount(d));
    }
    fn opt_num(&mut self, name: &str, d: &Option<Decimal>) {
        if let Some(d) = d {
            self.num(name, d);
        }
    }
    fn role<Id>(&mut self, name: &str, r: &Role<Id>, id: &str) {
        self.open(name);
        self.el("Identifier", id);
        self.el("Name", &r.name);
        self.opt("Address", &r.address);
        self.opt("PersonInCharge", &r.person_in_charge);
        self.opt("TelephoneNumber", &r.telephone_number);
        self.opt("FacsimileNumber", &r.facsimile_number);
        self.opt("EmailAddress", &r.email_address);
        self.opt("CustomerNumber", &r.customer_number);
        self.opt("RoleRemark", &r.role_remark);
        self.close(name);
    }
}

fn invoice(x: &mut Xml, m: &Invoice) {
    x.open("Main");
    x.el("InvoiceNumber", m.number.as_str());
    x.el("InvoiceDate", &m.date.to_string());
    x.el("InvoiceTime", &m.time.to_string());
    x.role("Seller", &m.seller, m.seller.identifier.as_str());
    x.role("Buyer", &m.buyer, m.buyer.identifier.as_str());
    x.opt("BuyerRemark", &m.buyer_remark);
    x.opt("MainRemark", &m.main_remark);
    x.opt("CustomsClearanceMark", &m.customs_clearance_mark);
    x.opt("Category", &m.category);
    x.opt("RelateNumber", &m.relate_number);
    x.el("InvoiceType", &m.invoice_type);
    x.opt("GroupMark", &m.group_mark);
    x.el("DonateMark", if m.donate { "1" } else { "0" });
    if let Some(c) = &m.carrier {
        x.el("CarrierType", &c.carrier_type);
        x.el("CarrierId1", &c.id1);
        x.el("CarrierId2", &c.id2);
    }
    x.el("PrintMark", if m.print { "Y" } else { "N" });
    x.opt("NPOBAN", &m.npoban);
    if let Some(r) = &m.random_number {
        x.el("RandomNumber", r.as_str());
    }
    x.opt("BondedAreaConfirm", &m.bonded_area_confirm);
    x.opt("ZeroTaxRateReason", &m.zero_tax_rate_reason);
    x.opt("Reserved1", &m.reserved1);
    x.opt("Reserved2", &m.reserved2);
    x.close("Main");

    x.open("Details");
    for it in &m.items {
        x.open("ProductItem");
        x.el("Description", &it.description);
        x.num("Quantity", &it.quantity);
        x.opt("Unit", &it.unit);
        x.num("UnitPrice", &it.unit_price);
        x.el("TaxType", it.tax_type.code());
        x.num("Amount", &it.amount);
        x.el("SequenceNumber", &it.sequence_number);
        x.opt("Remark", &it.remark);
        x.opt("RelateNumber", &it.relate_number);
        x.close("ProductItem");
    }
    x.close("Details");

    let a = &m.amount;
    x.open("Amount");
    x.num("SalesAmount", &a.sales);
    x.num("FreeTaxSalesAmount", &a.free_tax_sales);
    x.num("ZeroTaxSalesAmount", &a.zero_tax_sales);
    x.el("TaxType", a.tax_type.code());
    x.num("TaxRate", &a.tax_rate);
    x.num("TaxAmount", &a.tax_amount);
    x.num("TotalAmount", &a.total);
    x.opt_num("DiscountAmount", &a.discount);
    x.opt_num("OriginalCurrencyAmount", &a.original_currency_amount);
    x.opt_num("ExchangeRate", &a.exchange_rate);
    x.opt("Currency", &a.currency);
    x.close("Amount");
}

fn cancel(x: &mut Xml, m: &CancelInvoice) {
    x.el("CancelInvoiceNumber", m.number.as_str());
    x.el("InvoiceDate", &m.invoice_date.to_string());
    x.el("BuyerId", m.buyer_id.as_str());
    x.el("SellerId", m.seller_id.as_str());
    x.el("CancelDate", &m.cancel_date.to_string());
    x.el("CancelTime", &m.cancel_time.to_string());
    x.el("CancelReason", &m.reason);
    x.opt("ReturnTaxDocumentNumber", &m.return_tax_document_number);
    x.opt("Remark", &m.remark);
    x.opt("Reserved1", &m.reserved1);
    x.opt("Reserved2", &m.reserved2);
}

fn void(x: &mut Xml, m: &VoidInvoice) {
    x.el("VoidInvoiceNumber", m.number.as_str());
    x.el("InvoiceDate", &m.invoice_date.to_string());
    x.el("BuyerId", m.buyer_id.as_str());
    x.el("SellerId", m.seller_id.as_str());
    x.el("VoidDate", &m.void_date.to_string());
    x.el("VoidTime", &m.void_time.to_string());
    x.el("VoidReason", &m.reason);
    x.opt("Remark", &m.remark);
    x.opt("Reserved1", &m.reserved1);
    x.opt("Reserved2", &m.reserved2);
}

fn allowance(x: &mut Xml, m: &Allowance) {
    x.open("Main");
    x.el("AllowanceNumber", &m.number);
    x.el("AllowanceDate", &m.date.to_string());
    x.role("Seller", &m.seller, m.seller.identifier.as_str());
    x.role("Buyer", &m.buyer, m.buyer.identifier.as_str());
    x.el("AllowanceType", &m.allowance_type);
    if let Some(b) = &m.original_seller_id {
        x.el("OriginalInvoiceSellerId", b.as_str());
    }
    if let Some(b) = &m.original_buyer_id {
        x.el("OriginalInvoiceBuyerId", b.as_str());
    }
    x.close("Main");

    x.open("Details");
    for it in &m.items {
        x.open("ProductItem");
        x.el("OriginalInvoiceDate", &it.original_invoice_date.to_string());
        x.el("OriginalInvoiceNumber", it.original_invoice_number.as_str());
        x.opt("OriginalSequenceNumber", &it.original_sequence_number);
        x.el("OriginalDescription", &it.original_description);
        x.num("Quantity", &it.quantity);
        x.opt("Unit", &it.unit);
        x.num("UnitPrice", &it.unit_price);
        x.num("Amount", &it.amount);
        x.num("Tax", &it.tax);
        x.el("AllowanceSequenceNumber", &it.allowance_sequence_number);
        x.el("TaxType", it.tax_type.code());
        x.close("ProductItem");
    }
    x.close("Details");

    x.open("Amount");
    x.num("TaxAmount", &m.tax_amount);
    x.num("TotalAmount", &m.total_amount);
    x.close("Amount");
}

fn cancel_allowance(x: &mut Xml, m: &CancelAllowance) {
    x.el("CancelAllowanceNumber", &m.number);
    x.el("AllowanceType", &m.allowance_type);
    x.el("AllowanceDate", &m.allowance_date.to_string());
    x.el("BuyerId", m.buyer_id.as_str());
    x.el("SellerId", m.seller_id.as_str());
    x.el("CancelDate", &m.cancel_date.to_string());
    x.el("CancelTime", &m.cancel_time.to_string());
    x.el("CancelReason", &m.reason);
    x.opt("Remark", &m.remark);
}
