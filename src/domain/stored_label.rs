//! A label read back from a row another release may have written. The
//! contract only grows: a newer release may add a scope or a reason code
//! while replicas of this one still run beside it (a rolling upgrade, a
//! rollback), and its rows (a fan-out, an outbox reference) come back here.
//! Such a label is kept as its text and carried verbatim into the events
//! built from the row, rather than failing the read or being dropped.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Serialize, Serializer};

use super::outcome::OutcomeKind;
use super::scope::{ReasonCode, Scope};

/// A fieldless enum stored as its text label.
pub trait TextLabel: Copy {
    fn label(self) -> &'static str;
    fn from_label(text: &str) -> Option<Self>;
}

impl TextLabel for Scope {
    fn label(self) -> &'static str {
        self.as_str()
    }

    fn from_label(text: &str) -> Option<Self> {
        Self::parse(text)
    }
}

impl TextLabel for OutcomeKind {
    fn label(self) -> &'static str {
        self.as_str()
    }

    fn from_label(text: &str) -> Option<Self> {
        Self::parse(text)
    }
}

impl TextLabel for ReasonCode {
    fn label(self) -> &'static str {
        self.as_str()
    }

    fn from_label(text: &str) -> Option<Self> {
        Self::parse(text)
    }
}

/// A label this release knows, or one a newer release wrote.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StoredLabel<T> {
    Known(T),
    /// Not a label of this release: its text, published as it is.
    Newer(String),
}

impl<T: TextLabel> StoredLabel<T> {
    /// The label a row holds.
    pub fn read(text: &str) -> Self {
        T::from_label(text).map_or_else(|| Self::Newer(text.to_string()), Self::Known)
    }

    /// The text stored and published.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Known(known) => known.label(),
            Self::Newer(text) => text,
        }
    }

    /// The value, if this release knows it.
    pub fn known(&self) -> Option<T> {
        match self {
            Self::Known(known) => Some(*known),
            Self::Newer(_) => None,
        }
    }
}

impl<T> From<T> for StoredLabel<T> {
    fn from(known: T) -> Self {
        Self::Known(known)
    }
}

/// The same JSON as the label itself: a known one as its enum serialises
/// (its label), a newer one as its text.
impl<T: Serialize> Serialize for StoredLabel<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Known(known) => known.serialize(serializer),
            Self::Newer(text) => serializer.serialize_str(text),
        }
    }
}

/// The schema of the known labels: the contract this release publishes
/// (a newer label is the newer release's contract).
impl<T: JsonSchema> JsonSchema for StoredLabel<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }

    fn inline_schema() -> bool {
        T::inline_schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_label_reads_as_its_value_and_a_newer_one_as_its_text() {
        assert_eq!(
            StoredLabel::<ReasonCode>::read("fraud"),
            StoredLabel::Known(ReasonCode::Fraud)
        );
        let newer = StoredLabel::<ReasonCode>::read("regulator_order");
        assert_eq!(newer, StoredLabel::Newer("regulator_order".into()));
        assert_eq!(newer.as_str(), "regulator_order");
        assert_eq!(newer.known(), None);
    }

    #[test]
    fn both_serialise_as_the_label_alone() {
        let known = StoredLabel::Known(Scope::Company);
        let newer = StoredLabel::<Scope>::Newer("provider".into());
        assert_eq!(
            serde_json::to_string(&known).ok(),
            serde_json::to_string(&Scope::Company).ok()
        );
        assert_eq!(
            serde_json::to_string(&newer).ok().as_deref(),
            Some("\"provider\"")
        );
    }

    #[test]
    fn the_schema_is_the_known_labels_schema() {
        let generator = &mut SchemaGenerator::default();
        assert_eq!(
            StoredLabel::<ReasonCode>::json_schema(generator),
            ReasonCode::json_schema(generator)
        );
    }
}
