//! The expression language of `get_all_records_where` / `get_all_where`, as xapi's DB filter reads it:
//!
//! ```text
//! expr   := or
//! or     := and ("or" and)*
//! and    := unary ("and" unary)*
//! unary  := "not" unary | "(" expr ")" | "true" | "false" | value ("=" | "<>") value
//! value  := field "name" | "literal" | name
//! ```
//!
//! `field "name__label"` (xapi's column spelling) and `field "name_label"` both name the field `name_label`; a
//! bare word is a field name too (`power_state="Running"`). Values compare as their string forms, as in xapi.

use xapi_types::{Class, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    True,
    False,
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Eq(Operand, Operand),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Field(usize),
    Literal(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Eq,
    Neq,
    Open,
    Close,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Tok::Open);
            }
            ')' => {
                chars.next();
                out.push(Tok::Close);
            }
            '=' => {
                chars.next();
                out.push(Tok::Eq);
            }
            '<' => {
                chars.next();
                if chars.next() != Some('>') {
                    return Err("expected <>".into());
                }
                out.push(Tok::Neq);
            }
            '"' => {
                chars.next();
                let mut lit = String::new();
                loop {
                    match chars.next() {
                        None => return Err("unterminated string".into()),
                        Some('\\') => lit.extend(chars.next()),
                        Some('"') => break,
                        Some(c) => lit.push(c),
                    }
                }
                out.push(Tok::Quoted(lit));
            }
            c if c.is_alphanumeric() || c == '_' => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if !(c.is_alphanumeric() || c == '_' || c == '-' || c == ':' || c == '.') {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
            c => return Err(format!("unexpected {c:?}")),
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    class: &'a Class,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self, depth: usize) -> Result<Expr, String> {
        let mut e = self.and(depth)?;
        while self.keyword("or") {
            e = Expr::Or(Box::new(e), Box::new(self.and(depth)?));
        }
        Ok(e)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, String> {
        let mut e = self.unary(depth)?;
        while self.keyword("and") {
            e = Expr::And(Box::new(e), Box::new(self.unary(depth)?));
        }
        Ok(e)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, String> {
        if depth > 64 {
            return Err("expression nests too deeply".into());
        }
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.peek() == Some(&Tok::Open) {
            self.pos += 1;
            let e = self.or(depth + 1)?;
            if self.next() != Some(Tok::Close) {
                return Err("expected )".into());
            }
            return Ok(e);
        }
        let is_cmp = |t: Option<&Tok>| matches!(t, Some(Tok::Eq | Tok::Neq));
        if !is_cmp(self.toks.get(self.pos + 1)) && !matches!(self.peek(), Some(Tok::Word(w)) if w == "field") {
            if self.keyword("true") {
                return Ok(Expr::True);
            }
            if self.keyword("false") {
                return Ok(Expr::False);
            }
        }
        let a = self.operand()?;
        let op = self.next();
        let b = self.operand()?;
        match op {
            Some(Tok::Eq) => Ok(Expr::Eq(a, b)),
            Some(Tok::Neq) => Ok(Expr::Not(Box::new(Expr::Eq(a, b)))),
            _ => Err("expected = or <>".into()),
        }
    }

    fn operand(&mut self) -> Result<Operand, String> {
        match self.next() {
            Some(Tok::Word(w)) if w == "field" => match self.next() {
                Some(Tok::Quoted(name) | Tok::Word(name)) => self.field(&name),
                _ => Err("expected a field name after `field`".into()),
            },
            Some(Tok::Quoted(lit)) => Ok(Operand::Literal(lit)),
            Some(Tok::Word(name)) => self.field(&name),
            other => Err(format!("expected a value, found {other:?}")),
        }
    }

    fn field(&self, name: &str) -> Result<Operand, String> {
        let flat = name.replace("__", "_");
        self.class
            .field(&flat)
            .map(|(i, _)| Operand::Field(i))
            .ok_or_else(|| format!("{} has no field {name}", self.class.name))
    }
}

pub fn parse(class: &Class, s: &str) -> Result<Expr, String> {
    let toks = lex(s)?;
    if toks.is_empty() {
        return Ok(Expr::True);
    }
    let mut p = Parser { toks, pos: 0, class };
    let e = p.or(0)?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected {:?}", p.peek()));
    }
    Ok(e)
}

/// The string a field value compares as.
fn as_text(v: &Value) -> String {
    match v {
        Value::Str(s) | Value::DateTime(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::I32(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Nil => String::new(),
        Value::Array(items) => {
            format!("({})", items.iter().map(|i| format!("'{}'", as_text(i))).collect::<Vec<_>>().join(" "))
        }
        Value::Struct(m) => {
            format!("({})", m.iter().map(|(k, v)| format!("('{k}' '{}')", as_text(v))).collect::<Vec<_>>().join(" "))
        }
    }
}

pub fn eval(e: &Expr, fields: &[Value]) -> bool {
    let operand = |o: &Operand| match o {
        Operand::Field(i) => as_text(&fields[*i]),
        Operand::Literal(s) => s.clone(),
    };
    match e {
        Expr::True => true,
        Expr::False => false,
        Expr::Not(e) => !eval(e, fields),
        Expr::And(a, b) => eval(a, fields) && eval(b, fields),
        Expr::Or(a, b) => eval(a, fields) || eval(b, fields),
        Expr::Eq(a, b) => operand(a) == operand(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xapi_types::model;

    fn vm() -> &'static Class {
        model::class("VM").unwrap()
    }

    fn row(label: &str, dom0: bool) -> Vec<Value> {
        let mut fields = crate::db::default_row(vm());
        fields[vm().field("name_label").unwrap().0] = Value::str(label);
        fields[vm().field("is_control_domain").unwrap().0] = Value::Bool(dom0);
        fields
    }

    #[test]
    fn xapi_and_short_forms() {
        let a = row("web", false);
        let b = row("Control domain", true);
        for (expr, on_a, on_b) in [
            (r#"field "name__label"="web""#, true, false),
            (r#"field "name_label" = "web""#, true, false),
            (r#"name_label="web""#, true, false),
            (r#"field "is_control_domain"="true""#, false, true),
            (r#"not (field "is_control_domain"="true")"#, true, false),
            (r#"field "name_label"="web" or field "is_control_domain"="true""#, true, true),
            (r#"field "name_label"="web" and field "is_control_domain"="true""#, false, false),
            (r#"field "name_label"<>"web""#, false, true),
            ("true", true, true),
            ("false", false, false),
            ("", true, true),
        ] {
            let e = parse(vm(), expr).unwrap_or_else(|err| panic!("{expr}: {err}"));
            assert_eq!((eval(&e, &a), eval(&e, &b)), (on_a, on_b), "{expr}");
        }
    }

    #[test]
    fn nonsense_is_an_error() {
        for expr in [r#"field "nope"="x""#, r#"field "name_label"="#, "(", r#""a"="b" junk"#, "name_label=\"x"] {
            assert!(parse(vm(), expr).is_err(), "{expr}");
        }
    }
}
