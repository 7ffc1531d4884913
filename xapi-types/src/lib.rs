//! The XenAPI as data, and the bytes it travels in.
//!
//! * [`model`]: the shape of the datamodel (classes, fields, messages, enums, errors); the tables themselves are
//!   generated into [`generated`] from `model/datamodel.json` by `cargo xtask codegen` — never edit them by hand.
//! * [`value`]: the dynamic value every call parameter and result is made of.
//! * [`wire`]: XML-RPC and JSON-RPC, exactly as xapi writes and reads them. The daemon and `xe` both use these
//!   codecs and no others.

pub mod generated;
pub mod model;
pub mod value;
pub mod wire;

pub use model::{Class, ErrorCode, Field, Message, MsgKind, Param, Ty};
pub use value::Value;
