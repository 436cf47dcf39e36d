//! Reading typed values from printed text without being told the locale: numbers whose
//! separators say which is the decimal one, dates in English, German, French and Dutch, and
//! currencies by symbol or ISO code. Each reader answers `None` when the text could mean two
//! different things (`1,939`, `03/04/2024`), so the extractor keeps such text as printed.

use super::policy;
use chrono::NaiveDate;

/// A printed amount: `€ 4.904,94` → 4904.94, `1,939.00` → 1939, `1 234,5` → 1234.5, `12.5`.
/// The separator that comes last and once is the decimal one when the other groups thousands
/// (groups of exactly three digits); a lone point or comma is decimal unless three digits follow
/// it and it could group thousands (`1.939`, `1,939`: ambiguous; `0.125` is not).
pub fn number(s: &str) -> Option<f64> {
    let chars: Vec<char> = s.trim().chars().collect();
    let digit = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    // Separators between digits, with the length of the digit run before each and after the last.
    let mut seps: Vec<char> = Vec::new();
    let mut runs: Vec<usize> = Vec::new();
    let mut run = 0;
    let mut started = false;
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_digit() {
            started = true;
            run += 1;
        } else if started && (c == '.' || c == ',') && i > 0 && digit(i - 1) && digit(i + 1) {
            seps.push(c);
            runs.push(std::mem::take(&mut run));
        } else if started
            && (c == ' ' || c == '\u{a0}' || c == '\u{202f}' || c == '\'')
            && digit(i + 1)
            && i > 0
            && digit(i - 1)
        {
            // a space or an apostrophe grouping thousands
            seps.push(' ');
            runs.push(std::mem::take(&mut run));
        } else if started {
            break;
        }
    }
    runs.push(run);
    let zero_head = chars
        .iter()
        .find(|c| c.is_ascii_digit())
        .is_some_and(|c| *c == '0');
    let groups_ok = |from: usize, to: usize| runs[0] <= 3 && runs[from..to].iter().all(|r| *r == 3);
    let n = seps.len();
    let decimal = match seps.last() {
        None => '.',
        Some(&last) => {
            let others = &seps[..n - 1];
            if others.is_empty() {
                // Three digits after a lone separator could be a group of thousands, unless
                // what stands before could not be a group's head (`0.125`, `1234.567`).
                let could_group = runs[1] == 3 && (1..=3).contains(&runs[0]) && !zero_head;
                match last {
                    '.' | ',' if could_group => return None,
                    '.' | ',' => last,
                    _ if groups_ok(1, 2) => '.',
                    _ => return None,
                }
            } else if others.iter().all(|c| *c == last) {
                // 1.234.567 or 1,234,567: all grouping
                if !groups_ok(1, n + 1) {
                    return None;
                }
                if last == '.' {
                    ','
                } else {
                    '.'
                }
            } else if last != ' ' && !others.contains(&last) {
                // 1.234,56 or 1 234.56: the last is the decimal, the others group
                let grouping = others[0];
                if others.iter().any(|c| *c != grouping) || !groups_ok(1, n) {
                    return None;
                }
                last
            } else {
                return None;
            }
        }
    };
    policy::parse_number(s, decimal).ok()
}

const MONTH_NAMES: [&[&str]; 12] = [
    &[
        "jan", "januar", "janvier", "januari", "jänner", "janv", "january",
    ],
    &[
        "feb", "februar", "février", "fevrier", "februari", "févr", "fevr", "february",
    ],
    &[
        "mar", "märz", "maerz", "mär", "mrz", "mars", "maart", "mrt", "march",
    ],
    &["apr", "april", "avril", "avr"],
    &["may", "mai", "mei"],
    &["jun", "juni", "juin", "june"],
    &["jul", "juli", "juillet", "juil", "july"],
    &["aug", "august", "août", "aout", "augustus"],
    &["sep", "sept", "september", "septembre"],
    &["oct", "okt", "oktober", "octobre", "october"],
    &["nov", "november", "novembre"],
    &[
        "dec",
        "dez",
        "dezember",
        "décembre",
        "decembre",
        "december",
        "déc",
    ],
];

const WEEKDAYS: [&str; 28] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "montag",
    "dienstag",
    "mittwoch",
    "donnerstag",
    "freitag",
    "samstag",
    "sonntag",
    "lundi",
    "mardi",
    "mercredi",
    "jeudi",
    "vendredi",
    "samedi",
    "dimanche",
    "maandag",
    "dinsdag",
    "woensdag",
    "donderdag",
    "vrijdag",
    "zaterdag",
    "zondag",
];

fn month_abbrev(word: &str) -> Option<&'static str> {
    const EN: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    MONTH_NAMES
        .iter()
        .position(|names| names.contains(&word))
        .map(|i| EN[i])
}

/// One date written alone: `2024-09-14`, `14.09.2024` (a point means day first), `09/14/2024`
/// (order told by a number above 12, else by `day_first`, the document's convention where its
/// language tells it, else ambiguous), `7. Mai 2014`, `Sep 3, 2014`, `Montag, 3rd September 2014`.
fn date_alone(s: &str, day_first: bool) -> Option<NaiveDate> {
    let t = s.trim();
    let t = match t.get(..11) {
        // an ISO timestamp's date
        Some(head) if head.ends_with('T') && head.as_bytes()[4] == b'-' => &t[..10],
        _ => t,
    };
    let lower = t.to_lowercase();
    let mut words = Vec::new();
    for w in lower.split([' ', ',']).filter(|w| !w.is_empty()) {
        let bare = w.trim_end_matches('.');
        if WEEKDAYS.contains(&bare) {
            continue;
        }
        if let Some(m) = month_abbrev(bare) {
            words.push(m.to_string());
            continue;
        }
        let digits = bare.trim_end_matches(|c: char| c.is_alphabetic());
        let suffix = &bare[digits.len()..];
        if !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && ["st", "nd", "rd", "th", "er", "e", "ste", "de", "ten"].contains(&suffix)
        {
            words.push(digits.to_string());
            continue;
        }
        words.push(w.to_string());
    }
    let joined = words.join(" ");
    // A point between numbers means day first (`14.09.2024`); a slash or a dash is read only
    // when a number above 12 or two equal ones leave one order.
    let numeric: Vec<&str> = joined.split(['.', '/', '-']).collect();
    if numeric.len() == 3
        && numeric[0].len() != 4
        && !joined.contains('.')
        && numeric
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        let (x, y): (u32, u32) = (numeric[0].parse().ok()?, numeric[1].parse().ok()?);
        if x <= 12 && y <= 12 && x != y && !day_first {
            return None;
        }
    }
    policy::parse_date(&joined, true).ok()
}

/// A date in printed text: the text itself, else the one date that a run of its words spells
/// (two different dates, as in a period, are ambiguous).
pub fn date(s: &str, day_first: bool) -> Option<NaiveDate> {
    if s.len() > 120 {
        return None;
    }
    if let Some(d) = date_alone(s, day_first) {
        return Some(d);
    }
    let words: Vec<&str> = s.split_whitespace().collect();
    let mut found: Option<NaiveDate> = None;
    for len in [1, 2, 3, 4] {
        for w in words.windows(len) {
            if let Some(d) = date_alone(&w.join(" "), day_first) {
                match found {
                    Some(f) if f != d => return None,
                    _ => found = Some(d),
                }
            }
        }
    }
    found
}

const ISO_CODES: [&str; 48] = [
    "EUR", "USD", "GBP", "CHF", "JPY", "CNY", "INR", "CAD", "AUD", "NZD", "SEK", "NOK", "DKK",
    "PLN", "CZK", "HUF", "RON", "BGN", "TRY", "RUB", "BRL", "MXN", "ZAR", "SGD", "HKD", "KRW",
    "AED", "SAR", "ILS", "THB", "IDR", "MYR", "PHP", "VND", "ARS", "CLP", "COP", "PEN", "EGP",
    "NGN", "KES", "MAD", "UAH", "ISK", "TWD", "QAR", "KWD", "PKR",
];

/// The ISO 4217 code a currency word or mark stands for.
pub fn currency_code(s: &str) -> Option<&'static str> {
    let t = s.trim().to_lowercase();
    if let Some(code) = ISO_CODES.iter().find(|c| c.eq_ignore_ascii_case(&t)) {
        return Some(code);
    }
    Some(match t.as_str() {
        "€" | "euro" | "euros" => "EUR",
        "$" | "us$" | "dollar" | "dollars" | "us dollar" => "USD",
        "£" | "pound" | "pounds" | "sterling" => "GBP",
        "¥" | "yen" => "JPY",
        "₹" | "rs" | "rs." | "rupee" | "rupees" => "INR",
        "fr." | "franc" | "francs" => "CHF",
        "kr" => "SEK",
        "zł" | "zloty" => "PLN",
        "kč" => "CZK",
        "c$" | "ca$" => "CAD",
        "a$" | "au$" => "AUD",
        "nz$" => "NZD",
        "hk$" => "HKD",
        "s$" => "SGD",
        _ => return None,
    })
}

/// The one currency a piece of text names, by ISO code (as a word of its own), mark (`€`,
/// `$`, `₹`, also glued to digits) or a prefixed dollar (`US$`, `CA$`); none, or two different
/// ones, give `None`.
pub fn currency_in(text: &str) -> Option<&'static str> {
    let mut found: Option<&'static str> = None;
    let mut note = |code: &'static str| -> bool {
        match found {
            Some(f) if f != code => false,
            _ => {
                found = Some(code);
                true
            }
        }
    };
    for word in
        text.split(|c: char| c.is_whitespace() || c == '|' || c == '(' || c == ')' || c == ':')
    {
        let w = word.trim_matches(|c: char| c.is_ascii_digit() || c == '.' || c == ',' || c == '-');
        if w.is_empty() {
            continue;
        }
        let code = if w.len() == 3 && w.bytes().all(|b| b.is_ascii_uppercase()) {
            ISO_CODES.iter().find(|c| **c == w).copied()
        } else if let Some(prefix) = w.strip_suffix('$') {
            currency_code(&format!("{prefix}$"))
        } else if w.chars().count() == 1
            || w.eq_ignore_ascii_case("rs")
            || w.eq_ignore_ascii_case("rs.")
        {
            currency_code(w)
        } else {
            None
        };
        if let Some(code) = code {
            if !note(code) {
                return None;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_by_their_separators() {
        for (s, want) in [
            ("€ 4.904,94", Some(4904.94)),
            ("1,939.00", Some(1939.0)),
            ("1.939,00 EUR", Some(1939.0)),
            ("1 234,50", Some(1234.5)),
            ("1'234.50", Some(1234.5)),
            ("12,5", Some(12.5)),
            ("12.5", Some(12.5)),
            ("1.234.567", Some(1_234_567.0)),
            ("1,234,567", Some(1_234_567.0)),
            ("-3.25", Some(-3.25)),
            ("USD 1,000.00", Some(1000.0)),
            ("42", Some(42.0)),
            ("1,939", None),
            ("1.939", None),
            ("0.125", Some(0.125)),
            ("0,125", Some(0.125)),
            ("1234.567", Some(1234.567)),
            ("12.3456", Some(12.3456)),
            ("12,34,567.00", None),
            ("1.234,5,6", None),
            ("1,2.3,4", None),
            ("12 items and 3", None),
        ] {
            assert_eq!(number(s), want, "{s}");
        }
    }

    #[test]
    fn a_documents_day_first_convention_settles_an_ambiguous_order() {
        let d = NaiveDate::from_ymd_opt;
        assert_eq!(date("02/11/2019", true), d(2019, 11, 2));
        assert_eq!(date("02/11/2019", false), None);
        assert_eq!(
            date("12/25/2019", true),
            d(2019, 12, 25),
            "a number above 12 still decides"
        );
    }

    #[test]
    fn dates_in_four_languages_and_orders() {
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d);
        for (s, want) in [
            ("2024-09-14", d(2024, 9, 14)),
            ("2024-09-14T10:00:00Z", d(2024, 9, 14)),
            ("14.09.2024", d(2024, 9, 14)),
            ("03.04.2024", d(2024, 4, 3)),
            ("09/14/2024", d(2024, 9, 14)),
            ("14/09/2024", d(2024, 9, 14)),
            ("03/04/2024", None),
            ("04/04/2024", d(2024, 4, 4)),
            ("7. Mai 2014", d(2014, 5, 7)),
            ("Sep 3, 2014", d(2014, 9, 3)),
            ("3rd September 2014", d(2014, 9, 3)),
            ("Montag, 7. März 2016", d(2016, 3, 7)),
            ("1er août 2023", d(2023, 8, 1)),
            ("12 décembre 2022", d(2022, 12, 12)),
            ("5 maart 2021", d(2021, 3, 5)),
            ("14 okt. 2020", d(2020, 10, 14)),
            ("Datum 14.09.2024 (Leistung)", d(2024, 9, 14)),
            ("01.09.2024 - 30.09.2024", None),
            ("31.02.2024", None),
            ("soon", None),
        ] {
            assert_eq!(date(s, false), want, "{s}");
        }
    }

    #[test]
    fn currencies_by_code_mark_and_word() {
        for (s, want) in [
            ("€", Some("EUR")),
            ("EUR", Some("EUR")),
            ("$", Some("USD")),
            ("₹", Some("INR")),
            ("Rs", Some("INR")),
            ("chf", Some("CHF")),
            ("XYZ", None),
        ] {
            assert_eq!(currency_code(s), want, "{s}");
        }
        for (s, want) in [
            ("Total | € 4.904,94", Some("EUR")),
            ("Total: 4.904,94€", Some("EUR")),
            ("Amount due (USD) 12.00", Some("USD")),
            ("CA$ 10", Some("CAD")),
            ("Rs. 1,500", Some("INR")),
            ("Total 12.00 | VAT 2.00", None),
            ("€ 10 or $ 12", None),
        ] {
            assert_eq!(currency_in(s), want, "{s}");
        }
    }
}
