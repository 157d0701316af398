//! Tests of loading as a whole: the top-level keys, TOML syntax, `env:` secrets, one pass
//! reporting every problem, no secret in any diagnostic, and the example configuration
//! loading as written. Each section's own rules are tested in its module.

use std::path::Path;

use herald_core::{EventKind, TeamId};

use super::load_with_env;
use super::testing::{BASE, Files, SUB, check, test_env};

#[test]
fn valid_base_config_has_no_diagnostics() {
    check(SUB, "");
}

#[test]
fn unknown_top_level_key() {
    check(
        &format!("{SUB}\n[servr]\nlisten = \"x\"\n"),
        "herald.toml:22:2: error: unknown key `servr`; expected one of include, server, store, retention, delivery, telegram, email, plugins, event_types, teams, sources, cluster",
    );
}

#[test]
fn missing_environment_variable() {
    check(
        &format!("{SUB}[server]\nadmin_token = \"env:NOT_SET_ANYWHERE\"\n"),
        "herald.toml:22:15: error: environment variable `NOT_SET_ANYWHERE` (the admin token) is not set",
    );
    check(
        &format!("{SUB}[server]\nadmin_token = \"env:EMPTY\"\n"),
        "herald.toml:22:15: error: environment variable `EMPTY` (the admin token) is empty",
    );
}

#[test]
fn invalid_toml_syntax() {
    check(
        "[teams.acme.channels.bad\n",
        "herald.toml:17:25: error: invalid TOML: unclosed table, expected `]`",
    );
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    let files = Files::new(&[(
        "herald.toml",
        &format!(
            "{BASE}[server]\ncolour = 1\n[delivery]\ntimeout = 1\n\n[[teams.acme.subscriptions]]\nchannel = \"nope\"\nevents = [\"**\"]\noutcome = \"failed\"\n"
        ),
    )]);
    let out = files.short();
    assert_eq!(out.matches(": error: ").count(), 5, "{out}");
    for needle in [
        "unknown field `colour`",
        "expected a string",
        "unknown channel `nope`",
        "invalid pattern `**`",
        "unknown variant `failed`",
    ] {
        assert!(out.contains(needle), "missing {needle} in\n{out}");
    }
}

#[test]
fn secrets_never_appear_in_diagnostics() {
    let files = Files::new(&[(
        "herald.toml",
        &format!(
            "{BASE}{SUB}[teams.globex]\napi_keys = [\"env:ACME_API_KEY\"]\n[teams.globex.channels.w]\ntype = \"webhook\"\nurl = \"https://e.com\"\nsecret = \"env:ACME_API_KEY\"\n"
        ),
    )]);
    let outcome = files.load();
    assert!(outcome.diagnostics.has_errors());
    let rendered = outcome.diagnostics.render(false) + &outcome.diagnostics.render_short();
    assert!(!rendered.contains("acme-key"), "{rendered}");
}

#[test]
fn literal_secrets_never_appear_in_any_rendering() {
    // A literal key listed twice (pointed at), a token of the wrong type (serde quotes the
    // value), and an error on the line after a literal secret (shown as context).
    let files = Files::new(&[(
        "herald.toml",
        &format!(
            "{BASE}{SUB}[server]\nadmin_token = 918273645\n\
             [teams.globex]\napi_keys = [\"literal-globex-key\", \"literal-globex-key\"]\n\
             [teams.globex.channels.w]\ntype = \"webhook\"\nurl = \"https://e.com\"\n\
             secret = \"whsec_literalsecretvalue\"\nnonsense = 1\n"
        ),
    )]);
    let outcome = files.load();
    let short = outcome.diagnostics.render_short();
    for expected in [
        "expected a string",
        "is listed twice",
        "unknown field `nonsense`",
    ] {
        assert!(short.contains(expected), "no `{expected}` in:\n{short}");
    }
    let rendered = outcome.diagnostics.render(false) + &short;
    for secret in [
        "918273645",
        "literal-globex-key",
        "whsec_literalsecretvalue",
    ] {
        assert!(!rendered.contains(secret), "`{secret}` leaked:\n{rendered}");
    }
    // A syntax error on the next line shows the secret's line as context.
    let files = Files::new(&[(
        "herald.toml",
        "[server]\nadmin_token = \"literal-admin-token\"\nlisten = = 1\n",
    )]);
    let outcome = files.load();
    let rendered = outcome.diagnostics.render(false) + &outcome.diagnostics.render_short();
    assert!(rendered.contains("invalid TOML"), "{rendered}");
    assert!(
        !rendered.contains("literal-admin-token"),
        "leaked:\n{rendered}"
    );
}

#[test]
fn the_example_configuration_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/herald.toml");
    let outcome = load_with_env(&path, &test_env);
    assert_eq!(outcome.diagnostics.render_short(), "");
    let config = outcome.config.expect("example config is valid");
    let acme = TeamId::parse("acme").unwrap();
    let globex = TeamId::parse("globex").unwrap();
    assert_eq!(config.team_for_key("acme-key"), Some(&acme));
    assert_eq!(config.team_for_key("globex-key"), Some(&globex));
    assert_eq!(config.team_for_key("nobody"), None);
    assert_eq!(config.teams[&acme].channels.len(), 4);
    assert_eq!(
        config.matcher.registry().kind("capsule.state.changed"),
        Some(EventKind::Transient)
    );
    assert_eq!(config.delivery.retry_schedule.len(), 7);
    assert_eq!(config.server.listen.port(), 8650);
    assert!(config.store.path.ends_with("config/data"));
}
