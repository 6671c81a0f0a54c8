//! The demo's connected platforms (Tape, Podio, ShareFile), their
//! tools, and which user may use which platform.

use serde_json::{json, Value};

/// A tool: what it answers for a request body. Demo data, computed from the
/// input so that clients can see their request went through.
pub(super) type Tool = fn(&serde_json::Map<String, Value>) -> Value;

/// One connected platform.
pub(super) struct App {
    /// The path segment, e.g. `tape`.
    pub name: &'static str,
    /// Its tools by name, e.g. `listApps`.
    pub tools: &'static [(&'static str, Tool)],
}

/// Every platform of the demo.
pub(super) const APPS: &[App] = &[
    App {
        name: "tape",
        tools: &[("listApps", list_apps), ("listRecords", list_records)],
    },
    App {
        name: "podio",
        tools: &[("listApps", list_apps), ("listItems", list_records)],
    },
    App {
        name: "sharefile",
        tools: &[("listFolders", list_folders)],
    },
];

/// The demo users and the platforms each has connected.
pub const USERS: &[(&str, &[&str])] = &[("u1", &["tape", "podio"]), ("u2", &["sharefile"])];

/// The demo users' ids, in [`USERS`]' order (who may sign in).
pub(super) const USER_IDS: &[&str] = &["u1", "u2"];

/// The platform named `name`.
pub(super) fn app(name: &str) -> Option<&'static App> {
    APPS.iter().find(|a| a.name == name)
}

impl App {
    /// The tool named `name`.
    pub(super) fn tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }
}

/// Whether `user` is a demo user.
pub(super) fn is_user(user: &str) -> bool {
    USERS.iter().any(|(u, _)| *u == user)
}

/// Whether `user` has connected `app`.
pub fn may_use(user: &str, app: &str) -> bool {
    USERS
        .iter()
        .any(|(u, apps)| *u == user && apps.contains(&app))
}

fn workspace(input: &serde_json::Map<String, Value>) -> Value {
    input.get("workspace_id").cloned().unwrap_or(Value::Null)
}

fn list_apps(input: &serde_json::Map<String, Value>) -> Value {
    json!({
        "workspace_id": workspace(input),
        "apps": [
            { "id": 1, "name": "Projects" },
            { "id": 2, "name": "Contacts" },
        ],
    })
}

fn list_records(input: &serde_json::Map<String, Value>) -> Value {
    json!({
        "app_id": input.get("app_id").cloned().unwrap_or(Value::Null),
        "records": [
            { "id": 101, "title": "Kick-off" },
            { "id": 102, "title": "Review" },
        ],
    })
}

fn list_folders(input: &serde_json::Map<String, Value>) -> Value {
    json!({
        "parent": input.get("parent").cloned().unwrap_or_else(|| json!("root")),
        "folders": [
            { "id": "fo1", "name": "Contracts" },
            { "id": "fo2", "name": "Invoices" },
        ],
    })
}
