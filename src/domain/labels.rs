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

/// The lexicon group any of `names` (a field's name, display name, synonyms) belongs to,
/// named by the group's first label: the field's cluster in the Field Registry.
pub fn cluster_of(names: &[String]) -> Option<&'static str> {
    let folded: Vec<String> = names.iter().map(|n| fold_caption(n)).collect();
    GROUPS
        .iter()
        .find(|g| members(g).any(|l| folded.contains(&fold_caption(l))))
        .and_then(|g| members(g).next())
}

/// The words of a field's names: `invoice_number` and `Invoice Number` give `invoice`, `number`.
fn words(names: &[String]) -> std::collections::BTreeSet<String> {
    names
        .iter()
        .flat_map(|n| {
            n.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// How alike two fields are, from 0 to 1: 1 when the lexicon groups them, else the share of
/// their names' words they have in common (Jaccard).
pub fn similarity(a: &[String], b: &[String]) -> f64 {
    if let (Some(x), Some(y)) = (cluster_of(a), cluster_of(b)) {
        if x == y {
            return 1.0;
        }
    }
    let (wa, wb) = (words(a), words(b));
    let union = wa.union(&wb).count();
    if union == 0 {
        return 0.0;
    }
    wa.intersection(&wb).count() as f64 / union as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cluster_by_the_lexicon_and_resemble_by_their_words() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(cluster_of(&s(&["rechnungsnummer"])), Some("invoice number"));
        assert_eq!(
            cluster_of(&s(&["invoice_no", "Invoice No"])),
            Some("invoice number")
        );
        assert_eq!(cluster_of(&s(&["favourite_colour"])), None);
        assert_eq!(
            similarity(&s(&["Invoice Number"]), &s(&["Rechnungsnr"])),
            1.0
        );
        let half = similarity(&s(&["ship_date"]), &s(&["ship_port"]));
        assert!((half - 1.0 / 3.0).abs() < 1e-9, "{half}");
        assert_eq!(similarity(&s(&["colour"]), &s(&["weight"])), 0.0);
    }

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
