//! Why an entry or message is refused, as the HTTP API would say it (the field path and
//! the problem), worded for a source: no "API key" or "admin token", which a source does
//! not have.

use herald_engine::IngestError;

/// Whether an ingest error is about the entry itself (it will never pass: dead-letter
/// it) rather than herald (store failing, shutting down: leave it pending).
pub fn is_permanent(e: &IngestError) -> bool {
    matches!(
        e,
        IngestError::Malformed(_)
            | IngestError::Invalid { .. }
            | IngestError::UnknownType { .. }
            | IngestError::WrongTeam { .. }
    )
}

/// The reason recorded with a refused entry: `FIELD: PROBLEM`, as HTTP gives it.
pub fn of(e: &IngestError) -> String {
    match e {
        IngestError::WrongTeam {
            field,
            caller,
            team,
        } => {
            format!("{field}: this source publishes for team `{caller}`, not `{team}`")
        }
        IngestError::Invalid { field, message }
            if field.ends_with("team_id") && message.starts_with("missing") =>
        {
            format!(
                "{field}: missing; this source takes each event's team from its `team_id` (team_from = \"payload\")"
            )
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::TeamId;

    #[test]
    fn reasons_name_the_field_and_never_a_credential() {
        let cases = [
            (
                IngestError::WrongTeam {
                    field: "team_id".into(),
                    caller: TeamId::parse("acme").unwrap(),
                    team: "globex".into(),
                },
                "team_id: this source publishes for team `acme`, not `globex`",
            ),
            (
                IngestError::Invalid {
                    field: "team_id".into(),
                    message: "missing: the admin token publishes for any team, so name it".into(),
                },
                "team_id: missing; this source takes each event's team from its `team_id` (team_from = \"payload\")",
            ),
            (
                IngestError::UnknownType {
                    field: "event".into(),
                    name: "disk.full".into(),
                },
                "event: event type `disk.full` is not declared in [[event_types]]",
            ),
        ];
        for (e, want) in cases {
            assert!(is_permanent(&e));
            assert_eq!(of(&e), want);
        }
        assert!(!is_permanent(&IngestError::ShuttingDown));
    }
}
