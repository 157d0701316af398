//! herald-core: the event model, the event-type registry, subscriptions, the matcher and
//! the rendered-message model that formatters produce and channels send.
//!
//! Architecture invariant: this crate does no IO. It knows nothing of HTTP, SQL, tokio,
//! wasmtime, files, the environment or the clock; callers pass in whatever it needs
//! (the current time, a freshly generated id).

pub mod dedup;
pub mod digest;
pub mod event;
pub mod explain;
pub mod group;
pub mod matcher;
pub mod message;
pub mod pattern;
pub mod reason;
pub mod registry;
pub mod secret;
pub mod silence;
pub mod subscription;
pub mod team;

pub use dedup::{Dedup, DedupField};
pub use digest::{Digest, DigestKind};
pub use event::{
    Actor, ActorType, Event, EventBuilder, EventError, Outcome, RawEvent, Resource, Timestamp,
};
pub use explain::{Explanation, Verdict};
pub use group::{Grouping, Throttle, ThrottleScope};
pub use matcher::Matcher;
pub use message::{Format, Rendered};
pub use pattern::{Pattern, PatternError};
pub use reason::Reason;
pub use registry::{EventKind, EventTypeRegistry};
pub use secret::Secret;
pub use silence::{Silence, SilenceMatchers, SilenceState};
pub use subscription::{Subscription, SubscriptionId};
pub use team::TeamId;
