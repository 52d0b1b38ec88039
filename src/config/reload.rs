//! What a reload may change: `[policy]`, `[masking]`, `[tokens]` and
//! `[approvals]` (but not its store or webhooks), nothing else.
//!
//! A reload parses and validates the whole file exactly as startup does
//! (`Config::load`), then this pure check compares it with the running
//! configuration. Anything else that differs is refused rather than half
//! applied: listeners, upstream credentials and identities live in running
//! sessions and tasks that a reload does not rebuild, so applying only the
//! rules while the file says something else would leave the operator believing
//! a change took effect when it did not.

use super::Config;
use std::collections::BTreeMap;

/// Why `new` may not replace `running` by a reload, or `None` when it may.
/// `running_sections` are the sections of the file now in force (the last
/// accepted reload's, or the startup file's).
pub fn reload_refusal(
    running: &Config,
    running_sections: &std::collections::BTreeSet<String>,
    new: &Config,
) -> Option<String> {
    // A missing section would silently fall back to its defaults (no custom
    // rules, no masking): the classic truncated or half-written file.
    let gone: Vec<String> = running_sections
        .iter()
        .filter(|s| !new.sections.contains(*s))
        .map(|s| format!("[{s}]"))
        .collect();
    if !gone.is_empty() {
        return Some(format!(
            "the file lacks {}, which the running configuration has (a truncated file?); \
             to clear a section, keep it and empty it",
            gone.join(" and ")
        ));
    }
    if running.server != new.server {
        return Some(restart("[server]"));
    }
    if let Some(what) = map_change("upstreams", &running.upstreams, &new.upstreams) {
        return Some(restart(&what));
    }
    if running.databases != new.databases {
        return Some(restart("[databases]"));
    }
    if let Some(what) = map_change("users", &running.users, &new.users) {
        return Some(restart(&what));
    }
    // [tokens] may change: keys rotate and issuers come and go without a
    // restart (Gateway::reload swaps the token service).
    if running.audit != new.audit {
        return Some(restart("[audit]"));
    }
    if running.admin != new.admin {
        return Some(restart("[admin]"));
    }
    // Held statements and their tickets live in the running store.
    if running.approvals.store != new.approvals.store {
        return Some(restart("approvals.store (or its path)"));
    }
    // The webhooks' delivery task is built at startup with its URLs and
    // clients; a reload that accepted new ones would not post to them.
    if running.approvals.webhooks != new.approvals.webhooks {
        return Some(restart("approvals.webhooks"));
    }
    None
}

fn restart(what: &str) -> String {
    format!(
        "{what} changed; a reload changes only [policy], [masking], [tokens] and [approvals] (not its store or webhooks), restart pgward to apply it"
    )
}

/// The first entry added, removed or changed, as `section.name`.
fn map_change<V: PartialEq>(
    section: &str,
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
) -> Option<String> {
    let changed = old
        .iter()
        .find(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .or_else(|| new.keys().find(|k| !old.contains_key(*k)))?;
    Some(format!("{section}.{changed}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::verifier::ScramVerifier;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("/etc/pgward/pgward.toml")).expect("valid")
    }

    /// A file with this verifier for alice and this `[policy]` body.
    fn base(verifier: &str, policy: &str) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:7000\"\n\n[upstreams.main]\nuser = \"app\"\n\n\
             [users.alice]\nscram_verifier = \"{verifier}\"\n\n[policy]\n{policy}"
        )
    }

    #[test]
    fn rules_may_change_and_nothing_else() {
        let v = ScramVerifier::generate("pw");
        let running = parse(&base(&v, "default_action = \"allow\"\n"));
        let check = |text: &str| reload_refusal(&running, &running.sections, &parse(text));
        assert_eq!(check(&base(&v, "default_action = \"deny\"\n")), None);
        // A section the running file lacked may be added.
        let masking = "[masking]\n[[masking.rules]]\nname = \"m\"\ncolumns = [\"ssn\"]\nstrategy = \"null\"\n";
        assert_eq!(check(&format!("{}{masking}", base(&v, ""))), None);
        let cases = [
            (base(&v, "").replace("7000", "7001"), "[server] changed"),
            (
                base(&v, "").replace("user = \"app\"", "user = \"other\""),
                "upstreams.main changed",
            ),
            (
                base(&v, "").replace("[policy]", "[upstreams.more]\nuser = \"x\"\n[policy]"),
                "upstreams.more changed",
            ),
            (
                base(&ScramVerifier::generate("pw2"), ""),
                "users.alice changed",
            ),
            (base(&v, "").replace("[policy]\n", ""), "lacks [policy],"),
        ];
        for (text, reason) in cases {
            let got = check(&text).unwrap_or_default();
            assert!(got.contains(reason), "{text}\n=> {got:?}");
        }
    }

    #[test]
    fn approvals_settings_reload_but_not_their_store() {
        let v = ScramVerifier::generate("pw");
        let with = |approvals: &str| format!("{}\n[approvals]\n{approvals}\n", base(&v, ""));
        let running = parse(&with("hold_timeout = \"1m\""));
        let check = |text: &str| reload_refusal(&running, &running.sections, &parse(text));
        assert_eq!(
            check(&with("hold_timeout = \"2m\"\napprovers = [\"ops\"]")),
            None
        );
        let moved = check(&with("path = \"elsewhere.jsonl\"")).unwrap_or_default();
        assert!(moved.contains("approvals.store"), "{moved}");
        let hooked = check(&with(
            "hold_timeout = \"1m\"\n[[approvals.webhooks]]\nurl = \"https://hooks.example/t\"",
        ))
        .unwrap_or_default();
        assert!(hooked.contains("approvals.webhooks"), "{hooked}");
    }
}
