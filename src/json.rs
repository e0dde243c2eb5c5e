//! JSON text at the byte level: what the rest of the crate reads bodies and writes answers
//! with. It depends on nothing else in the crate; `policy` and `admission` read through it.
//!
//! | module | what lives there |
//! | --- | --- |
//! | [`escape`] | where a string's plain run ends ([`special`], a word at a time), strings written escaped exactly as serde_json escapes them ([`write_escaped`]) |
//! | [`index`] | the structural index of a whole body, built in the one pass that validates it ([`Index`]) |
//! | [`raw`] | readers over validated text: an object one level deep ([`RawObject`]), the members and elements of any level ([`Structure`]), plain scalars without serde_json ([`plain_scalar`]) |
//!
//! # Bounds
//!
//! What reading a body of `n` bytes may hold, whatever the body:
//! - **Nesting**: at most [`MAX_DEPTH`] (serde_json's recursion limit) containers deep. The
//!   index refuses a deeper container where its byte is first read, before it allocates for that
//!   level ([`index::Refusal::TooDeep`]); the reader then answers with serde_json's own words
//!   for that limit (`recursion limit exceeded at line … column …`), read by a pass that
//!   allocates nothing per level.
//! - **Memory**: the index holds 12 bytes a value or key, and a value takes at least two bytes
//!   of text (`0,`), so at most 6 `n` (12 `n` while its vector grows); the member list of a
//!   level read is 40 bytes a member, at least five bytes of text each. A review's text is
//!   about ten bytes a value, and what `oldObject` repeats of `object` is one value, so a real
//!   review's index is a fraction of `n`.
//! - **Length**: texts of 1 GiB or more are refused ([`index::Refusal::TooLong`]).
//!
//! Pure: text in, positions and values out, no I/O.

pub mod escape;
pub mod index;
pub mod raw;

pub use escape::{Escaping, special, write_escaped, write_string};
pub use index::{Index, MAX_DEPTH, Refusal};
pub use raw::{RawObject, Structure, plain_scalar};
