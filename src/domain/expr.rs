//! The small, safe arithmetic language of `compute` rules: numbers, field names, `+ - * /`,
//! parentheses, unary minus, and `round(x, n)`, `min(...)`, `max(...)`, `abs(x)`, `sum(...)`,
//! `avg(...)`. An array field's elements are named by paths (`domain::path`): one element's
//! value as `lines[2].amount`, every element's as `lines[].amount`, which only an aggregate
//! takes: `sum(lines[].amount)`, `avg(…)`, `min(…)`, `max(…)`, and `count(lines)` or
//! `count(lines[].amount)` (the elements, or those with a value).

use super::path;
use serde_json::Value;
use std::collections::BTreeSet;

pub const MAX_LEN: usize = 1000;
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Num(f64),
    Var(String),
    Neg(Box<Expr>),
    Bin(char, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
    /// `lines[].amount`: every element's value, the argument of an aggregate.
    Each(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Func {
    Round,
    Min,
    Max,
    Abs,
    Sum,
    Avg,
    Count,
}

/// What an expression reads: fields' numbers (a field, or one element's `lines[2].amount`),
/// and the values a path names in every element (`lines[].amount`).
pub trait Env {
    fn number(&self, name: &str) -> Result<f64, String>;
    fn values(&self, path: &str) -> Result<Vec<Value>, String>;
}

/// An environment of numbers only: no field is an array.
struct Numbers<'a>(&'a dyn Fn(&str) -> Result<f64, String>);

impl Env for Numbers<'_> {
    fn number(&self, name: &str) -> Result<f64, String> {
        (self.0)(name)
    }
    fn values(&self, path: &str) -> Result<Vec<Value>, String> {
        Err(format!("'{}' is not an array field", path::base(path)))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Op(char),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            let n: f64 = s.parse().map_err(|_| format!("bad number '{s}'"))?;
            if !n.is_finite() {
                return Err(format!("number '{s}' is beyond the range of a number"));
            }
            out.push(Tok::Num(n));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if "+-*/(),[].".contains(c) {
            out.push(Tok::Op(c));
            i += 1;
        } else {
            return Err(format!("unexpected character '{c}'"));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Op(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("expression nests deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }
    fn expr(&mut self) -> Result<Expr, String> {
        self.enter()?;
        let mut left = self.term()?;
        loop {
            let op = if self.eat('+') {
                '+'
            } else if self.eat('-') {
                '-'
            } else {
                break;
            };
            let right = self.term()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }
    fn term(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat('*') {
                '*'
            } else if self.eat('/') {
                '/'
            } else {
                break;
            };
            let right = self.unary()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat('-') {
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Neg(Box::new(inner)));
        }
        if self.eat('+') {
            return self.unary();
        }
        self.atom()
    }
    fn atom(&mut self) -> Result<Expr, String> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(Expr::Num(n))
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                if self.peek() == Some(&Tok::Op('[')) {
                    return self.path(name);
                }
                if self.eat('(') {
                    let f = match name.as_str() {
                        "round" => Func::Round,
                        "min" => Func::Min,
                        "max" => Func::Max,
                        "abs" => Func::Abs,
                        "sum" => Func::Sum,
                        "avg" => Func::Avg,
                        "count" => Func::Count,
                        other => return Err(format!("unknown function '{other}'")),
                    };
                    let mut args = Vec::new();
                    if !self.eat(')') {
                        loop {
                            args.push(self.expr()?);
                            if self.eat(')') {
                                break;
                            }
                            if !self.eat(',') {
                                return Err("expected ',' or ')'".into());
                            }
                        }
                    }
                    let ok = match f {
                        Func::Round => args.len() == 1 || args.len() == 2,
                        Func::Abs => args.len() == 1,
                        Func::Count => {
                            args.len() == 1 && matches!(args[0], Expr::Each(_) | Expr::Var(_))
                        }
                        Func::Min | Func::Max | Func::Sum | Func::Avg => !args.is_empty(),
                    };
                    if !ok {
                        return Err(format!("wrong number of arguments to '{name}'"));
                    }
                    // A path to every element anywhere but as an aggregate's one argument is
                    // refused once the whole expression is read (`loose_each`).
                    Ok(Expr::Call(f, args))
                } else {
                    Ok(Expr::Var(name))
                }
            }
            Some(Tok::Op('(')) => {
                self.pos += 1;
                let e = self.expr()?;
                if !self.eat(')') {
                    return Err("missing ')'".into());
                }
                Ok(e)
            }
            Some(Tok::Op(c)) => Err(format!("unexpected '{c}'")),
            None => Err("unexpected end of expression".into()),
        }
    }

    /// After a field's name, at `[`: `[]` or `[n]`, then `.sub` or nothing.
    fn path(&mut self, field: String) -> Result<Expr, String> {
        self.eat('[');
        let index = match self.peek().cloned() {
            Some(Tok::Num(n)) if n.fract() == 0.0 && n >= 0.0 => {
                self.pos += 1;
                format!("{n}")
            }
            Some(Tok::Op(']')) => String::new(),
            _ => return Err(format!("'{field}[' needs ']' or a whole number and ']'")),
        };
        if !self.eat(']') {
            return Err(format!("'{field}[{index}' needs ']'"));
        }
        let sub = if self.eat('.') {
            match self.peek().cloned() {
                Some(Tok::Ident(s)) => {
                    self.pos += 1;
                    format!(".{s}")
                }
                _ => return Err(format!("'{field}[{index}].' needs a sub-field name")),
            }
        } else {
            String::new()
        };
        let p = format!("{field}[{index}]{sub}");
        Ok(if index.is_empty() {
            Expr::Each(p)
        } else {
            Expr::Var(p)
        })
    }
}

pub fn parse(src: &str) -> Result<Expr, String> {
    if src.len() > MAX_LEN {
        return Err(format!("expression longer than {MAX_LEN} characters"));
    }
    let toks = lex(src)?;
    if toks.is_empty() {
        return Err("empty expression".into());
    }
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.expr()?;
    if p.pos != p.toks.len() {
        return Err("unexpected input after the expression".into());
    }
    if let Some(path) = loose_each(&e) {
        return Err(format!(
            "'{path}' names a value per element: take sum(), avg(), min(), max() or count() of it"
        ));
    }
    Ok(e)
}

/// A path to every element that stands anywhere but as an aggregate's one argument.
fn loose_each(e: &Expr) -> Option<&str> {
    match e {
        Expr::Each(p) => Some(p),
        Expr::Num(_) | Expr::Var(_) => None,
        Expr::Neg(x) => loose_each(x),
        Expr::Bin(_, a, b) => loose_each(a).or_else(|| loose_each(b)),
        Expr::Call(f, args) => match args.as_slice() {
            [Expr::Each(_)] if !matches!(f, Func::Round | Func::Abs) => None,
            _ => args.iter().find_map(loose_each),
        },
    }
}

impl Expr {
    pub fn vars(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.collect(&mut out);
        out
    }
    /// The paths into array fields it reads, as written (`lines[].amount`, `lines[2].amount`).
    pub fn paths(&self) -> BTreeSet<String> {
        fn walk(e: &Expr, out: &mut BTreeSet<String>) {
            match e {
                Expr::Var(v) | Expr::Each(v) if path::is_path(v) => {
                    out.insert(v.clone());
                }
                Expr::Num(_) | Expr::Var(_) | Expr::Each(_) => {}
                Expr::Neg(x) => walk(x, out),
                Expr::Bin(_, a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                Expr::Call(_, args) => args.iter().for_each(|a| walk(a, out)),
            }
        }
        let mut out = BTreeSet::new();
        walk(self, &mut out);
        out
    }

    fn collect(&self, out: &mut BTreeSet<String>) {
        match self {
            Expr::Num(_) => {}
            Expr::Var(v) | Expr::Each(v) => {
                out.insert(path::base(v).to_string());
            }
            Expr::Neg(e) => e.collect(out),
            Expr::Bin(_, a, b) => {
                a.collect(out);
                b.collect(out);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.collect(out)),
        }
    }

    /// Checks what can be known without inputs: a `round` whose digits use no field must have
    /// valid digits, or every document would fail on it.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Expr::Num(_) | Expr::Var(_) | Expr::Each(_) => Ok(()),
            Expr::Neg(e) => e.check(),
            Expr::Bin(_, a, b) => a.check().and(b.check()),
            Expr::Call(f, args) => {
                args.iter().try_for_each(Expr::check)?;
                match (f, args.get(1)) {
                    (Func::Round, Some(digits)) if digits.vars().is_empty() => {
                        let d = digits.eval(&|name| Err(format!("'{name}' has no value")))?;
                        round_digits(Some(d)).map(|_| ())
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    pub fn eval(&self, var: &dyn Fn(&str) -> Result<f64, String>) -> Result<f64, String> {
        self.eval_in(&Numbers(var))
    }

    pub fn eval_in(&self, env: &dyn Env) -> Result<f64, String> {
        let v = match self {
            Expr::Num(n) => *n,
            Expr::Var(name) => env.number(name)?,
            Expr::Each(path) => {
                return Err(format!("'{path}' names a value per element"));
            }
            Expr::Neg(e) => -e.eval_in(env)?,
            Expr::Call(f, args)
                if matches!(args.as_slice(), [Expr::Each(_)]) || *f == Func::Count =>
            {
                aggregate(*f, &args[0], env)?
            }
            Expr::Bin(op, a, b) => {
                let (x, y) = (a.eval_in(env)?, b.eval_in(env)?);
                match op {
                    '+' => x + y,
                    '-' => x - y,
                    '*' => x * y,
                    _ => {
                        if y == 0.0 {
                            return Err("division by zero".into());
                        }
                        x / y
                    }
                }
            }
            Expr::Call(f, args) => {
                let vals = args
                    .iter()
                    .map(|a| a.eval_in(env))
                    .collect::<Result<Vec<_>, _>>()?;
                match f {
                    Func::Abs => vals[0].abs(),
                    Func::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
                    Func::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    Func::Round => round_to(vals[0], round_digits(vals.get(1).copied())?)?,
                    Func::Sum => vals.iter().sum(),
                    Func::Avg => vals.iter().sum::<f64>() / vals.len() as f64,
                    Func::Count => vals.len() as f64,
                }
            }
        };
        if !v.is_finite() {
            return Err("the result is not a finite number".into());
        }
        Ok(v)
    }
}

/// An aggregate over every element: `count` counts the elements (of a field) or the values
/// (of a path), the others read the values there are as numbers; an element without a value
/// is passed over, one whose value is not a number is an error naming it. Over no values,
/// `sum` is 0 and `avg`, `min` and `max` have no value.
fn aggregate(f: Func, arg: &Expr, env: &dyn Env) -> Result<f64, String> {
    let (path, values) = match arg {
        Expr::Var(field) if !path::is_path(field) => {
            let p = format!("{field}[]");
            let all = env.values(&p)?;
            return Ok(all.len() as f64);
        }
        Expr::Each(p) | Expr::Var(p) => (p, env.values(p)?),
        _ => return Err("count takes an array field or a path to every element".into()),
    };
    let parsed = path::parse(path)?;
    let mut nums = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        if v.is_null() {
            continue;
        }
        match super::policy::as_number(v) {
            Some(n) => nums.push(n),
            None if f == Func::Count => nums.push(0.0),
            None => return Err(format!("{} is not a number ({v})", parsed.at(i))),
        }
    }
    let none = || format!("{path} has no values");
    Ok(match f {
        Func::Count => nums.len() as f64,
        Func::Sum => nums.iter().sum(),
        Func::Avg if nums.is_empty() => return Err(none()),
        Func::Avg => nums.iter().sum::<f64>() / nums.len() as f64,
        Func::Min | Func::Max if nums.is_empty() => return Err(none()),
        Func::Min => nums.iter().copied().fold(f64::INFINITY, f64::min),
        Func::Max => nums.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Func::Round | Func::Abs => return Err("round and abs take one value".into()),
    })
}

/// The digits `round` accepts. An f64 holds about 15 significant decimal digits, so a count
/// beyond these rounds nothing that matters, and more likely comes from a mistake.
pub const ROUND_DIGITS: std::ops::RangeInclusive<i32> = -15..=15;

/// The second argument of `round` (0 when absent) as a digit count: an integer in `ROUND_DIGITS`.
fn round_digits(arg: Option<f64>) -> Result<i32, String> {
    let d = arg.unwrap_or(0.0);
    let (lo, hi) = (*ROUND_DIGITS.start(), *ROUND_DIGITS.end());
    if d.fract() != 0.0 || !(f64::from(lo)..=f64::from(hi)).contains(&d) {
        return Err(format!(
            "round: digits must be an integer from {lo} to {hi}, not {d}"
        ));
    }
    Ok(d as i32)
}

/// Rounds half away from zero to `digits` decimals; negative digits round to tens, hundreds, ...
pub fn round_to(x: f64, digits: i32) -> Result<f64, String> {
    if !ROUND_DIGITS.contains(&digits) {
        return Err(format!(
            "round: digits must be an integer from {} to {}, not {digits}",
            ROUND_DIGITS.start(),
            ROUND_DIGITS.end()
        ));
    }
    if !x.is_finite() {
        return Err("the result is not a finite number".into());
    }
    let p = 10f64.powi(digits.abs());
    let scaled = if digits >= 0 { x * p } else { x / p };
    // From 2^52 up an f64 is a whole number: nothing is left to round, and scaling back could
    // overflow or move the value.
    if scaled.abs() >= 4_503_599_627_370_496.0 {
        return Ok(x);
    }
    let r = scaled.round();
    Ok(if digits >= 0 { r / p } else { r * p })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(src: &str) -> Result<f64, String> {
        parse(src)?.eval(&|v| match v {
            "net" => Ok(100.0),
            "tax" => Ok(19.0),
            "zero" => Ok(0.0),
            other => Err(format!("unknown {other}")),
        })
    }

    #[test]
    fn precedence_parentheses_and_unary_minus() {
        assert_eq!(ev("net + tax * 2").unwrap(), 138.0);
        assert_eq!(ev("(net + tax) * 2").unwrap(), 238.0);
        assert_eq!(ev("-net + 1").unwrap(), -99.0);
        assert_eq!(ev("net - tax - 1").unwrap(), 80.0);
        assert_eq!(ev("net / 4 / 5").unwrap(), 5.0);
        assert_eq!(ev("round(net * 1.19 / 3, 2)").unwrap(), 39.67);
        assert_eq!(
            ev("max(net, tax, 500) + min(1, 2) + abs(-3)").unwrap(),
            504.0
        );
    }

    #[test]
    fn round_digits_outside_minus_15_to_15_or_fractional_are_errors() {
        for bad in [
            "round(net, -1000)",
            "round(net, 1000)",
            "round(net, 16)",
            "round(net, -16)",
            "round(net, 0.5)",
            "round(net, tax)",
        ] {
            assert!(ev(bad).unwrap_err().contains("digits"), "{bad}");
        }
        assert_eq!(ev("round(1234.5, -2)").unwrap(), 1200.0);
        assert_eq!(ev("round(-1250, -2)").unwrap(), -1300.0);
        assert_eq!(ev("round(net / 3, 15)").unwrap(), 33.333_333_333_333_336);
        assert_eq!(ev("round(2.5)").unwrap(), 3.0);
    }

    #[test]
    fn number_literals_beyond_f64_are_refused() {
        let huge = format!("net + {}", "9".repeat(400));
        assert!(parse(&huge).unwrap_err().contains("range"));
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        assert_eq!(ev("net / zero").unwrap_err(), "division by zero");
        for bad in [
            "", "net +", "(net", "net tax", "foo(1)", "round()", "net $ 2", "1..2",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).unwrap_err().contains("deeper"));
        let minus = format!("{}1", "-".repeat(100));
        assert!(parse(&minus).is_err());
        assert_eq!(
            parse("net + tax * net")
                .unwrap()
                .vars()
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["net", "tax"]
        );
    }
}
