//! Arbitrary JSON values built from the fuzzer's bytes, shared by the `diff` and `oracle`
//! targets (each includes this file with `#[path]`): keys mostly from the target's own list of
//! names the rule cares about, values of every JSON kind (small integers as well as any `i64`
//! and `f64`), containers nested up to the target's depth.

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Number, Value};

/// What one target's values look like.
pub struct Values {
    /// Keys chosen three times in four; the fourth is any string.
    pub keys: &'static [&'static str],
    /// Containers nest at most this deep.
    pub max_depth: u32,
    /// Members or elements per container, at most.
    pub max_len: u32,
}

impl Values {
    /// A key: one of [`Values::keys`], or any string.
    pub fn key(&self, u: &mut Unstructured) -> Result<String> {
        if u.ratio(3, 4)? {
            Ok((*u.choose(self.keys)?).to_owned())
        } else {
            u.arbitrary()
        }
    }

    /// A value at `depth`: a scalar, or below [`Values::max_depth`] also a list or an object.
    pub fn value(&self, u: &mut Unstructured, depth: u32) -> Result<Value> {
        let kinds = if depth >= self.max_depth { 5 } else { 7 };
        Ok(match u.int_in_range(0..=kinds)? {
            0 => Value::Null,
            1 => Value::Bool(u.arbitrary()?),
            2 => Value::from(u.int_in_range(-3..=3)?),
            3 => Value::from(u.arbitrary::<i64>()?),
            4 => Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
            5 => Value::String(self.key(u)?),
            6 => {
                let len = u.int_in_range(0..=self.max_len)?;
                Value::Array(
                    (0..len)
                        .map(|_| self.value(u, depth + 1))
                        .collect::<Result<_>>()?,
                )
            }
            _ => {
                let len = u.int_in_range(0..=self.max_len)?;
                let mut map = Map::new();
                for _ in 0..len {
                    map.insert(self.key(u)?, self.value(u, depth + 1)?);
                }
                Value::Object(map)
            }
        })
    }
}
