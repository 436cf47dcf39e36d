//! How invoices and similar business documents label their common fields, in English, German,
//! French and Dutch, with the usual abbreviations. A field whose name, display name or synonym
//! is one of a group's labels is found by every label of that group, so a Spec that says
//! `invoice_number` also reads `Rechnungsnr.`, `N° de facture` and `Factuurnummer` without
//! listing them. Labels are compared folded (`fold_caption`).

/// Groups of labels that name the same thing, each a comma-separated list.
pub const GROUPS: &[&str] = &[
    "invoice number, invoice no, invoice nr, invoice num, invoice id, invoice ref, inv no, inv number, bill number, bill no, rechnungsnummer, rechnungsnr, rechnung nr, rechnung no, rechnungs nr, re nr, rg nr, belegnummer, numero de facture, numéro de facture, no de facture, facture no, numero facture, factuurnummer, factuurnr, factuur nr, factuur no, invoice, rechnung, facture, factuur",
    "invoice date, date of invoice, issue date, date issued, date of issue, issued on, billing date, date, rechnungsdatum, datum der rechnung, ausstellungsdatum, datum, date de facture, date de facturation, date facture, date d'émission, date d emission, factuurdatum, datum factuur, factuur datum",
    "due date, payment due, date due, due by, payable by, fälligkeitsdatum, fällig am, fällig bis, zahlbar bis, zahlungsziel, échéance, date d'échéance, date d echeance, date limite de paiement, vervaldatum, vervaldag, te betalen voor",
    "order date, delivery date, service date, date of supply, lieferdatum, leistungsdatum, bestelldatum, date de livraison, date de commande, leveringsdatum, besteldatum",
    "total, total amount, amount due, total due, grand total, invoice total, balance due, total payable, amount payable, total to pay, total incl vat, total incl tax, total including vat, amount, gesamtbetrag, gesamtsumme, rechnungsbetrag, endbetrag, zu zahlen, zahlbetrag, bruttobetrag, gesamt, summe, gesamt brutto, summe brutto, brutto, rechnungssumme, rechnungssumme brutto, gesamtsumme brutto, total brutto, montant total, total ttc, net à payer, net a payer, montant dû, montant du, total à payer, total a payer, somme à payer, somme a payer, montant à payer, montant a payer, montant ttc, totaal, totaalbedrag, te betalen, totaal incl btw, factuurbedrag, bedrag",
    "subtotal, sub total, net amount, net total, total net, total excl vat, total excl tax, zwischensumme, nettobetrag, summe netto, gesamt netto, netto, nettosumme, rechnungssumme netto, sous-total, sous total, total ht, montant ht, total hors taxes, montant hors taxes, subtotaal, totaal excl btw, netto bedrag",
    "tax, vat, sales tax, tax amount, vat amount, gst, total tax, total vat, tax total, mwst, ust, mehrwertsteuer, umsatzsteuer, summe umsatzsteuer, summe ust, summe mwst, total mwst, tva, montant tva, total tva, btw, btw bedrag, total btw",
    "currency, currency code, währung, devise, monnaie, valuta",
    "vendor, seller, supplier, issued by, lieferant, verkäufer, fournisseur, vendeur, leverancier, verkoper",
    "customer, bill to, billed to, buyer, client, sold to, kunde, rechnungsempfänger, käufer, acheteur, facturé à, facture a, klant, koper",
    "purchase order, po number, po no, order number, order no, order id, bestellnummer, bestellnr, auftragsnummer, numéro de commande, bon de commande, bestelnummer, ordernummer",
    "customer number, customer no, customer id, account number, kundennummer, kundennr, numéro client, no client, klantnummer",
    "vat id, vat number, vat no, tax id, ust-idnr, ust id, ustid, numéro tva, tva intracommunautaire, btw nummer, btw nr",
];

/// The labels of a group.
fn members(group: &str) -> impl Iterator<Item = &str> {
    group.split(", ")
}

/// A label folded for comparison: lower case, letters and digits only (accents kept), with
/// `#`, `№`, `n°` and `nº` read as "no" (`Invoice #` is `Invoice No`).
pub fn fold_caption(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' | '№' => out.push_str("no"),
            'n' | 'N' if matches!(chars.peek(), Some('°' | 'º')) => {
                chars.next();
                out.push_str("no");
            }
            c if c.is_alphanumeric() => out.extend(c.to_lowercase()),
            _ => {}
        }
    }
    out
}

/// Every label the lexicon knows, folded.
pub fn all() -> impl Iterator<Item = String> {
    GROUPS.iter().flat_map(|g| members(g).map(fold_caption))
}

/// The labels of the groups that any of `names` belongs to (folded), in group order.
pub fn related(names: &[String]) -> Vec<String> {
    let folded: Vec<String> = names.iter().map(|n| fold_caption(n)).collect();
    GROUPS
        .iter()
        .filter(|g| members(g).any(|l| folded.contains(&fold_caption(l))))
        .flat_map(|g| members(g).map(fold_caption))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_fold_numbers_signs_and_punctuation() {
        assert_eq!(fold_caption("Invoice #"), "invoiceno");
        assert_eq!(
            fold_caption("N° de facture"),
            "node facture".replace(' ', "")
        );
        assert_eq!(fold_caption("Rechnungsnr."), "rechnungsnr");
        assert_eq!(fold_caption("Fällig am:"), "fälligam");
    }

    #[test]
    fn a_field_named_like_a_group_member_gets_the_whole_group() {
        let got = related(&["invoice_number".into(), "Invoice Number".into()]);
        assert!(got.contains(&"rechnungsnr".to_string()));
        assert!(got.contains(&"factuurnummer".to_string()));
        assert!(!got.contains(&"total".to_string()));
        assert!(related(&["colour".into()]).is_empty());
    }
}
