//! Schemas several bodies share, written once: a name's rule.

use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

/// A name as the domain's `text` rule takes it: at least one character that is not a space,
/// no control character. Its length is checked after trimming, which a schema cannot say.
const NAME_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

fn name_builder() -> ObjectBuilder {
    ObjectBuilder::new().min_length(Some(1)).max_length(Some(200)).pattern(Some(NAME_PATTERN)).description(Some(
        "1 to 200 characters once leading and trailing spaces are trimmed (the length is checked after \
             trimming), no control characters.",
    ))
}

/// A required name.
pub(crate) fn name() -> Object {
    name_builder().schema_type(Type::String).build()
}

/// A name that may be omitted or null.
pub(crate) fn optional_name() -> Object {
    name_builder().schema_type(SchemaType::from_iter([Type::String, Type::Null])).build()
}
