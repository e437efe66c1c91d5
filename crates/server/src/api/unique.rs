//! Request input in which every name appears once. serde_json and axum's `Query` keep the
//! last of repeated names, so `?dry_run=true&dry_run=false` or `{"dry_run": true,
//! "dry_run": false}` would be read as whichever came last, and a reader who sees the first
//! is misled; capf refuses them with a 422 naming the field.

use std::collections::HashMap;
use std::fmt;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::problem::Problem;

/// The query string's parameters, each given at most once.
#[derive(Debug, Clone, Default)]
pub struct UniqueQuery(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for UniqueQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        query_params(parts.uri.query().unwrap_or("")).map(UniqueQuery)
    }
}

/// Parses a query string; a name given twice is a 422 naming it.
pub fn query_params(query: &str) -> Result<HashMap<String, String>, Problem> {
    let mut params = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if params.contains_key(name.as_ref()) {
            return Err(Problem::field(&name, "given more than once"));
        }
        params.insert(name.into_owned(), value.into_owned());
    }
    Ok(params)
}

/// Parses JSON as serde_json does, but refuses an object that names a key twice.
pub fn json_value(body: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<UniqueKeys>(body).map(|v| v.0)
}

/// A JSON value whose objects have no repeated key.
struct UniqueKeys(Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json never produces a non-finite number.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        UniqueKeys::deserialize(deserializer).map(|v| v.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "key {key:?} given more than once"
                )));
            }
            let UniqueKeys(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_query_parameters_are_refused() {
        let ok = query_params("dry_run=true&limit=5&prefix=SEP%30").unwrap();
        assert_eq!(ok["prefix"], "SEP0");
        assert_eq!(ok.len(), 3);
        match query_params("dry_run=true&dry_run=false") {
            Err(Problem::Invalid(fields)) => assert_eq!(fields[0].field, "dry_run"),
            other => panic!("{other:?}"),
        }
        // Percent-encoding does not make a name new.
        assert!(query_params("limit=1&lim%69t=2").is_err());
    }

    #[test]
    fn repeated_json_keys_are_refused_at_any_depth() {
        let v = json_value(br#"{"a": [1, 2.5, "x", null, {"b": true}], "c": {"d": -1}}"#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": [1, 2.5, "x", null, {"b": true}], "c": {"d": -1}})
        );
        for body in [
            &br#"{"dry_run": true, "dry_run": false}"#[..],
            br#"{"rows": [{"device": "SEP000000000001", "device": "jsmith"}]}"#,
            br#"{"a": {"b": 1, "b": 1}}"#,
        ] {
            let e = json_value(body).unwrap_err();
            assert!(e.to_string().contains("given more than once"), "{e}");
        }
        assert!(json_value(b"{\"a\": 1").is_err());
    }
}
