//! Invoice-like documents with known true values, in text, Markdown, CSV and JSON — for tests,
//! the demo and the benchmark. Deterministic for a given seed.

use serde_json::{json, Value};

pub struct Fixture {
    pub filename: String,
    pub mime_type: &'static str,
    pub content: String,
    pub metadata: Value,
    /// The values a correct run ends with, after the fixture policy normalizes them.
    pub expected: Value,
}

const SUPPLIERS: [&str; 6] = [
    "Acme GmbH",
    "Globex Ltd",
    "Initech AG",
    "Umbrella SA",
    "Stark Industries",
    "Wayne Enterprises",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A small deterministic generator (SplitMix64), so fixtures need no seeded RNG crate.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn grouped(cents: i64) -> String {
    let units = cents / 100;
    let mut s = units.to_string();
    let mut i = s.len() as i64 - 3;
    while i > 0 {
        s.insert(i as usize, ',');
        i -= 3;
    }
    format!("{s}.{:02}", cents % 100)
}

fn money(cents: i64) -> Value {
    crate::domain::policy::number_value(cents as f64 / 100.0)
}

/// The `n`-th fixture of a seed. `n % 4` picks the format.
pub fn invoice(seed: u64, n: u64) -> Fixture {
    let mut r = Mix(seed.wrapping_mul(1_000_003).wrapping_add(n));
    let number = format!("INV-{}", 10_000 + n);
    let supplier = SUPPLIERS[r.below(SUPPLIERS.len() as u64) as usize];
    let (year, month, day) = (
        2023 + r.below(3) as i32,
        1 + r.below(12) as u32,
        1 + r.below(28) as u32,
    );
    let iso = format!("{year:04}-{month:02}-{day:02}");
    let usd = r.below(4) == 0;
    let net = 1_000 + r.below(2_000_000) as i64;
    let tax = net * 19 / 100;
    let total = net + tax;
    let expected = json!({
        "invoice_number": number, "supplier": supplier, "issue_date": iso,
        "currency": if usd { "USD" } else { "EUR" }, "net": money(net), "tax": money(tax), "total": money(total)
    });
    let (filename, mime_type, content) = match n % 4 {
        0 => (
            format!("invoice-{n}.txt"),
            "text/plain",
            format!(
                "{supplier}\nINVOICE\n\nInvoice Number: {number}\nSupplier: {supplier}\nIssue Date: {day:02}.{month:02}.{year}\nCurrency: {}\nNet: {}\nTax - {}\nTotal: {}\n\nThank you for your business.\n",
                if usd { "$" } else { "€" },
                grouped(net),
                grouped(tax),
                grouped(total)
            ),
        ),
        1 => (
            format!("invoice-{n}.md"),
            "text/markdown",
            format!(
                "# Invoice {number}\n\n| Field | Value |\n|---|---|\n| Invoice No | {number} |\n| **Supplier** | {supplier} |\n| Issue Date | {} {day}, {year} |\n| Currency | {} |\n| Net | {} |\n| Tax | {} |\n| Amount due | {} |\n",
                MONTHS[month as usize - 1],
                if usd { "usd" } else { "Euro" },
                grouped(net),
                grouped(tax),
                grouped(total)
            ),
        ),
        2 => (
            format!("invoice-{n}.csv"),
            "text/csv",
            format!(
                "Invoice Number,Supplier,Issue Date,Currency,Net,Tax,Total\n{number},\"{supplier}\",{iso},{},\"{}\",\"{}\",\"{}\"\n",
                if usd { "USD" } else { "EUR" },
                grouped(net),
                grouped(tax),
                grouped(total)
            ),
        ),
        _ => (
            format!("invoice-{n}.json"),
            "application/json",
            json!({
                "invoiceNumber": number, "supplier": supplier, "issue_date": format!("{day:02}/{month:02}/{year}"),
                "currency": if usd { "usd" } else { "eur" }, "net": money(net), "tax": money(tax), "total": money(total)
            })
            .to_string(),
        ),
    };
    Fixture {
        filename,
        mime_type,
        content,
        metadata: json!({ "batch": format!("seed-{seed}") }),
        expected,
    }
}

/// The schema fields the fixtures fill.
pub fn schema_fields() -> Value {
    json!([
        { "field_name": "invoice_number", "data_type": "string", "synonyms": ["Invoice No"], "is_required": true },
        { "field_name": "supplier", "data_type": "string" },
        { "field_name": "issue_date", "data_type": "date" },
        { "field_name": "currency", "data_type": "string" },
        { "field_name": "net", "data_type": "number" },
        { "field_name": "tax", "data_type": "number" },
        { "field_name": "total", "data_type": "number", "synonyms": ["Amount due"] }
    ])
}

/// The rules (field, type, config) that normalize every fixture format to `expected`.
pub fn policy_rules() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("issue_date", "date", json!({ "day_first": true })),
        ("currency", "currency", json!({})),
        ("net", "number", json!({ "decimal_separator": "." })),
        ("tax", "number", json!({ "decimal_separator": "." })),
        ("total", "number", json!({ "decimal_separator": "." })),
    ]
}

/// A generated born-digital PDF invoice with known values, in one of three layouts (a label and
/// its value in columns far apart, `Label: value` lines, and a two-column header block), and
/// two pages: the total is on the second.
pub struct PdfInvoice {
    pub pdf: Vec<u8>,
    /// `invoice_number`, `issue_date`, `total`, `currency` as printed.
    pub expected: Value,
}

pub fn pdf_invoice(i: u64) -> PdfInvoice {
    use super::pdf_writer::{pdf, Line};
    let number = format!("{}", 30_000_000 + i * 7_919 % 9_000_000);
    let (d, m) = (1 + i % 28, 1 + i % 12);
    let date = format!("{:04}-{m:02}-{d:02}", 2024);
    let total = format!("{}.{:02}", 100 + i * 37 % 9_000, i % 100);
    let currency = ["EUR", "USD", "GBP"][(i % 3) as usize];
    let supplier = format!("Supplier {} Ltd", i % 97);
    let first: Vec<Line> = match i % 3 {
        0 => vec![
            Line::at(50.0, 50.0, supplier),
            Line::at(50.0, 90.0, "INVOICE"),
            Line::at(50.0, 130.0, "Invoice number"),
            Line::at(380.0, 130.0, number.clone()),
            Line::at(50.0, 150.0, "Invoice date"),
            Line::at(380.0, 150.0, date.clone()),
            Line::at(50.0, 170.0, "Currency"),
            Line::at(380.0, 170.0, currency),
        ],
        1 => vec![
            Line::at(50.0, 50.0, supplier),
            Line::at(50.0, 90.0, "Invoice"),
            Line::at(50.0, 130.0, format!("Invoice No.: {number}")),
            Line::at(50.0, 150.0, format!("Date: {date}")),
            Line::at(50.0, 170.0, format!("Currency: {currency}")),
        ],
        _ => vec![
            Line::at(300.0, 50.0, supplier),
            Line::at(50.0, 90.0, "TAX INVOICE"),
            Line::at(50.0, 130.0, format!("Invoice number: {number}")),
            Line::at(320.0, 130.0, format!("Currency: {currency}")),
            Line::at(50.0, 150.0, format!("Invoice date: {date}")),
        ],
    };
    let second = vec![
        Line::at(50.0, 50.0, "Description"),
        Line::at(380.0, 50.0, "Amount"),
        Line::at(50.0, 70.0, "Services rendered"),
        Line::at(380.0, 70.0, total.clone()),
        Line::at(50.0, 110.0, "Total"),
        Line::at(380.0, 110.0, total.clone()),
    ];
    PdfInvoice {
        pdf: pdf(&[first, second]),
        expected: json!({
            "invoice_number": number,
            "issue_date": date,
            "total": total,
            "currency": currency,
        }),
    }
}

/// The fields `pdf_invoice` fills, with the synonyms its layouts print.
pub fn pdf_invoice_fields() -> Value {
    json!([
        {"field_name": "invoice_number", "synonyms": ["Invoice number", "Invoice No"]},
        {"field_name": "issue_date", "synonyms": ["Invoice date", "Date"]},
        {"field_name": "total", "data_type": "string"},
        {"field_name": "currency"}
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_are_deterministic_and_cover_four_formats() {
        assert_eq!(invoice(7, 3).content, invoice(7, 3).content);
        let kinds: Vec<_> = (0..4).map(|n| invoice(1, n).mime_type).collect();
        assert_eq!(
            kinds,
            vec![
                "text/plain",
                "text/markdown",
                "text/csv",
                "application/json"
            ]
        );
        assert_eq!(grouped(123_456_789), "1,234,567.89");
        assert_eq!(grouped(1_005), "10.05");
    }
}
