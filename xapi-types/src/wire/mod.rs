//! XML-RPC and JSON-RPC as xapi speaks them (see docs/wire-protocol.md), and the query strings of the plain-HTTP
//! handlers ([`query`]).
//!
//! Requests are parsed into a [`Call`]; results are written through a [`Sink`], so that a large result (10,000
//! records) is encoded straight from the store into bytes without building a second tree. Both sinks own their
//! output buffer (`out`), which a streaming writer may drain between records.

#[doc(hidden)]
pub mod fuzzing;
pub mod jsonrpc;
pub mod query;
pub mod xmlrpc;

use crate::value::Value;

/// One method call, as it came off the wire, before any type checking.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    pub params: Vec<Value>,
}

/// A request body that is not a well-formed call.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request nests deeper than {0} levels")]
    TooDeep(usize),
}

/// Deepest nesting of arrays and structs a request may have.
pub const MAX_DEPTH: usize = 64;

/// Where values are written. Every `key` is followed by exactly one value.
pub trait Sink {
    fn str(&mut self, s: &str);
    fn int(&mut self, i: i64);
    fn i32(&mut self, i: i32);
    fn float(&mut self, f: f64);
    fn bool(&mut self, b: bool);
    fn datetime(&mut self, s: &str);
    fn nil(&mut self);
    fn begin_array(&mut self);
    fn end_array(&mut self);
    fn begin_struct(&mut self);
    fn key(&mut self, k: &str);
    fn end_struct(&mut self);
    /// Which encoding this sink writes (`"xmlrpc"`, `"jsonrpc"`): a value one sink of a kind encoded can be spliced
    /// into another of the same kind with [`Sink::raw_value`].
    fn encoding(&self) -> &'static str;
    /// Writes a value already encoded by a fresh sink of the same [`Sink::encoding`] (e.g. a cached record).
    fn raw_value(&mut self, encoded: &[u8]);
}

impl Value {
    pub fn emit<S: Sink + ?Sized>(&self, s: &mut S) {
        match self {
            Value::Str(v) => s.str(v),
            Value::Int(i) => s.int(*i),
            Value::I32(i) => s.i32(*i),
            Value::Float(f) => s.float(*f),
            Value::Bool(b) => s.bool(*b),
            Value::DateTime(d) => s.datetime(d),
            Value::Nil => s.nil(),
            Value::Array(items) => {
                s.begin_array();
                for v in items {
                    v.emit(s);
                }
                s.end_array();
            }
            Value::Struct(members) => {
                s.begin_struct();
                for (k, v) in members {
                    s.key(k);
                    v.emit(s);
                }
                s.end_struct();
            }
        }
    }
}
