//! Why an event does or does not reach each subscription of its team.

use serde::Serialize;

use crate::reason::Reason;
use crate::registry::EventKind;
use crate::subscription::SubscriptionId;
use crate::team::TeamId;

/// The verdict for one subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub subscription: String,
    #[serde(skip)]
    pub id: SubscriptionId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub channel: String,
    pub matched: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
}

/// What happens to an event: its kind, and a verdict for every subscription of its team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub event_type: String,
    pub team: TeamId,
    /// `None` when the type is not declared.
    pub kind: Option<EventKind>,
    pub verdicts: Vec<Verdict>,
}

impl Explanation {
    pub fn matched(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts.iter().filter(|v| v.matched)
    }
}
