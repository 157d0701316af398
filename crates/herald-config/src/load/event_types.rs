//! `[[event_types]]`: the registry of event types, durable or transient, each declared
//! once.

use std::collections::BTreeMap;

use herald_core::event::check_event_type;
use herald_core::{EventKind, EventTypeRegistry};
use toml::Spanned;
use toml::de::DeValue;

use super::{In, Loader, at};
use crate::diagnostic::{Diagnostic, Location};
use crate::raw::RawEventType;

impl Loader<'_> {
    pub(super) fn event_types(&mut self, value: Spanned<DeValue<'_>>, file: usize) {
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(items) => {
                for item in items {
                    if let Some(value) = self.de::<RawEventType>(item, file) {
                        self.sections.event_types.push(In { file, value });
                    }
                }
            }
            other => self.error(
                format!(
                    "`event_types` must be an array of tables ([[event_types]]), found {}",
                    other.type_str()
                ),
                at(file, span),
            ),
        }
    }

    pub(super) fn registry(&mut self, types: Vec<In<RawEventType>>) -> EventTypeRegistry {
        let mut registry = EventTypeRegistry::new();
        let mut first_at: BTreeMap<String, Location> = BTreeMap::new();
        for In { file, value } in types {
            let loc = Location {
                file,
                span: value.name.span(),
            };
            let name = value.name.into_inner();
            if let Err(err) = check_event_type(&name) {
                self.error(err, Some(loc));
                continue;
            }
            if let Some(first) = first_at.get(&name) {
                let first = self
                    .diags
                    .locate(&Diagnostic::error("", Some(first.clone())));
                self.error(
                    format!("event type `{name}` is declared twice (first at {first})"),
                    Some(loc),
                );
                continue;
            }
            first_at.insert(name.clone(), loc);
            let kind = if value.transient {
                EventKind::Transient
            } else {
                EventKind::Durable
            };
            registry.declare(name, kind);
        }
        registry
    }
}

#[cfg(test)]
mod tests {
    use crate::load::testing::{SUB, check};

    #[test]
    fn declared_twice() {
        check(
            &format!("{SUB}[[event_types]]\nname = \"host.down\"\n"),
            "herald.toml:22:8: error: event type `host.down` is declared twice (first at herald.toml:6:8)",
        );
    }
}
