//! The checked-in JSON Schema is generated from the format types; this fails when stale.
//! Regenerate with `UPDATE_SCHEMA=1 cargo test -p runbook-core --test schema`.

#[test]
fn checked_in_schema_is_current() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/runbook.schema.json");
    let generated = runbook_core::model::json_schema();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("write schema");
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "schemas/runbook.schema.json is stale: run `UPDATE_SCHEMA=1 cargo test -p runbook-core --test schema`"
    );
    let schema: serde_json::Value = serde_json::from_str(&generated).expect("valid JSON");
    for field in [
        "apiVersion",
        "name",
        "title",
        "steps",
        "params",
        "escalation",
    ] {
        assert!(
            schema["properties"].get(field).is_some(),
            "schema lacks `{field}`"
        );
    }
}

/// Editors complete a step's keys from its `properties`: the actions must be there, not
/// only inside the `oneOf` that says a step has at most one.
#[test]
fn a_step_offers_its_action_keys() {
    let schema: serde_json::Value =
        serde_json::from_str(&runbook_core::model::json_schema()).expect("valid JSON");
    let step = &schema["$defs"]["Step"]["properties"];
    for key in runbook_core::model::Action::KEYS {
        assert!(step.get(key).is_some(), "Step lacks `{key}`");
        assert!(
            step[key].get("description").is_some(),
            "`{key}` has no description for the editor to show"
        );
    }
}

/// The scenario file schema (`runbook schema --scenarios`) is checked in too.
#[test]
fn checked_in_scenario_schema_is_current() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/scenario.schema.json");
    let generated = runbook_core::scenario::json_schema();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("write schema");
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "schemas/scenario.schema.json is stale: run `UPDATE_SCHEMA=1 cargo test -p runbook-core --test schema`"
    );
    let schema: serde_json::Value = serde_json::from_str(&generated).expect("valid JSON");
    assert!(schema["properties"].get("scenarios").is_some());
    let scenario = &schema["$defs"]["Scenario"]["properties"];
    for field in ["name", "params", "answers", "results", "expect"] {
        assert!(scenario.get(field).is_some(), "Scenario lacks `{field}`");
    }
}
