//! Typed event catalogues: one `herald_events!` declaration gives a publisher its event
//! types as an enum and prints the `[[event_types]]` block herald's configuration needs,
//! so the publisher's types and herald's registry come from one list and cannot drift.

use herald_core::EventKind;

/// A set of event types declared with [`herald_events!`](crate::herald_events).
///
/// ```
/// use herald_client::{EventCatalogue, EventKind, herald_events};
///
/// herald_events! {
///     pub enum Types {
///         HostDown = "host.down",
///         transient UiBlip = "ui.blip",
///     }
/// }
/// assert_eq!(Types::ENTRIES, &[("host.down", EventKind::Durable), ("ui.blip", EventKind::Transient)]);
/// assert!(Types::registry_toml().contains("name = \"ui.blip\"\ntransient = true"));
/// ```
pub trait EventCatalogue: Copy + Sized + 'static {
    /// Every declared type with its kind, in declaration order.
    const ENTRIES: &'static [(&'static str, EventKind)];

    /// The `[[event_types]]` block that declares these types in herald's configuration.
    ///
    /// ```
    /// herald_client::herald_events! { pub enum T { HostDown = "host.down" } }
    /// use herald_client::EventCatalogue;
    /// assert_eq!(T::registry_toml(), "[[event_types]]\nname = \"host.down\"\n");
    /// ```
    fn registry_toml() -> String {
        registry_toml(Self::ENTRIES)
    }
}

/// The `[[event_types]]` TOML for `entries`, blocks separated by a blank line.
///
/// ```
/// use herald_client::{EventKind, registry_toml};
/// let toml = registry_toml(&[("a.b", EventKind::Durable), ("a.c", EventKind::Transient)]);
/// assert_eq!(toml, "[[event_types]]\nname = \"a.b\"\n\n[[event_types]]\nname = \"a.c\"\ntransient = true\n");
/// ```
pub fn registry_toml(entries: &[(&str, EventKind)]) -> String {
    let mut out = String::new();
    for (i, (name, kind)) in entries.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // Type names are `A-Z a-z 0-9 _ - .` (herald refuses others), so they need no
        // escaping inside a basic TOML string.
        out.push_str("[[event_types]]\nname = \"");
        out.push_str(name);
        out.push_str("\"\n");
        if *kind == EventKind::Transient {
            out.push_str("transient = true\n");
        }
    }
    out
}

/// Declares a typed event catalogue: an enum with one variant per event type.
///
/// Prefix a variant with `transient` for a type that goes to the live stream only. The
/// enum gets:
/// - `event_type()` (the string herald knows), `kind()`, `is_transient()`,
///   `from_event_type(&str)`, `Display` and `AsRef<str>` (so a variant can start a
///   builder: `Event::builder(Types::HostDown)`);
/// - `ALL` (every variant, to follow every type) and `SUBSCRIBABLE` (durable variants only:
///   herald refuses subscriptions to transient types);
/// - [`EventCatalogue`], with `registry_toml()` printing the `[[event_types]]` block for
///   herald's configuration, and `ENTRIES` for [`PublisherBuilder::catalogue`](crate::PublisherBuilder::catalogue).
///
/// ```
/// use herald_client::{Event, EventCatalogue, EventKind, herald_events};
///
/// herald_events! {
///     /// What the capsule service publishes.
///     pub enum CapsuleEvents {
///         /// A capsule was created (or failed to be).
///         CapsuleCreate = "capsule.create",
///         CapsuleDestroy = "capsule.destroy",
///         transient CapsuleStateChanged = "capsule.state.changed",
///     }
/// }
///
/// assert_eq!(CapsuleEvents::CapsuleCreate.event_type(), "capsule.create");
/// assert_eq!(CapsuleEvents::ALL.len(), 3);
/// assert_eq!(
///     CapsuleEvents::SUBSCRIBABLE,
///     &[CapsuleEvents::CapsuleCreate, CapsuleEvents::CapsuleDestroy]
/// );
/// assert!(CapsuleEvents::CapsuleStateChanged.is_transient());
/// assert_eq!(CapsuleEvents::from_event_type("capsule.destroy"), Some(CapsuleEvents::CapsuleDestroy));
/// let event = Event::builder(CapsuleEvents::CapsuleCreate).build();
/// assert_eq!(event.event, "capsule.create");
/// print!("{}", CapsuleEvents::registry_toml()); // paste into herald.toml
/// ```
#[macro_export]
macro_rules! herald_events {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident { $($body:tt)* }
    ) => {
        $crate::herald_events!(@parse [$(#[$meta])* $vis $name] [] [] $($body)*);
    };

    // One variant at a time: transient first (its keyword would otherwise read as a name).
    (@parse $head:tt [$($all:tt)*] [$($durable:tt)*]
        $(#[$vmeta:meta])* transient $variant:ident = $ty:literal $(, $($rest:tt)*)?
    ) => {
        $crate::herald_events!(@parse $head
            [$($all)* ($(#[$vmeta])* $variant $ty Transient)]
            [$($durable)*]
            $($($rest)*)?);
    };
    (@parse $head:tt [$($all:tt)*] [$($durable:tt)*]
        $(#[$vmeta:meta])* $variant:ident = $ty:literal $(, $($rest:tt)*)?
    ) => {
        $crate::herald_events!(@parse $head
            [$($all)* ($(#[$vmeta])* $variant $ty Durable)]
            [$($durable)* $variant]
            $($($rest)*)?);
    };

    (@parse [$(#[$meta:meta])* $vis:vis $name:ident]
        [$(($(#[$vmeta:meta])* $variant:ident $ty:literal $kind:ident))*]
        [$($durable:ident)*]
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every type of the catalogue, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            /// The durable types: the ones a subscription may name.
            pub const SUBSCRIBABLE: &'static [$name] = &[$($name::$durable,)*];

            /// The type's name as herald knows it, e.g. `capsule.create`.
            pub const fn event_type(self) -> &'static str {
                match self {
                    $($name::$variant => $ty,)*
                }
            }

            /// Durable (stored, delivered) or transient (live stream only).
            pub const fn kind(self) -> $crate::EventKind {
                match self {
                    $($name::$variant => $crate::EventKind::$kind,)*
                }
            }

            /// Whether the type goes to the live stream only.
            pub const fn is_transient(self) -> bool {
                matches!(self.kind(), $crate::EventKind::Transient)
            }

            /// The variant for a type name, if the catalogue declares it.
            pub fn from_event_type(name: &str) -> ::core::option::Option<$name> {
                match name {
                    $($ty => ::core::option::Option::Some($name::$variant),)*
                    _ => ::core::option::Option::None,
                }
            }
        }

        impl $crate::EventCatalogue for $name {
            const ENTRIES: &'static [(&'static str, $crate::EventKind)] =
                &[$(($ty, $crate::EventKind::$kind),)*];
        }

        impl ::core::convert::AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.event_type()
            }
        }

        impl ::core::convert::From<$name> for ::std::string::String {
            fn from(value: $name) -> ::std::string::String {
                ::std::string::String::from(value.event_type())
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.event_type())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::herald_events! {
        enum Sample {
            A = "a.one",
            transient B = "a.blip",
            C = "c"
        }
    }

    #[test]
    fn the_macro_keeps_order_kinds_and_the_trailing_comma_is_optional() {
        assert_eq!(Sample::ALL, &[Sample::A, Sample::B, Sample::C]);
        assert_eq!(Sample::SUBSCRIBABLE, &[Sample::A, Sample::C]);
        assert_eq!(Sample::B.kind(), EventKind::Transient);
        assert!(Sample::B.is_transient() && !Sample::A.is_transient());
        assert_eq!(Sample::from_event_type("nope"), None);
        assert_eq!(Sample::C.to_string(), "c");
        assert_eq!(
            Sample::registry_toml(),
            "[[event_types]]\nname = \"a.one\"\n\n[[event_types]]\nname = \"a.blip\"\ntransient = true\n\n[[event_types]]\nname = \"c\"\n"
        );
    }
}
